"""The Ray engine without a cluster: lazy imports, the missing-extra message, the one-commit job on a Lance table."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import transferkit as tk
from transferkit.errors import ConfigError, MissingDependencyError, StoreError

pytest.importorskip("lance")


def test_import_transferkit_does_not_import_ray():
    code = "import sys, transferkit as tk; tk.embed_folder_ray; print('ray' in sys.modules, 'lance' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_missing_ray_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"transferkit\[ray\]"):
        tk.embed_folder_ray(tk.Extractor.from_backbone("tiny_cnn"), tmp_path, tmp_path / "s")


def test_bad_options_and_in_memory_models_are_refused(tmp_path, flat_data):
    with pytest.raises(ConfigError, match="num_workers"):
        tk.embed_folder_ray(tk.Extractor.from_backbone("tiny_cnn"), flat_data, tmp_path / "s", num_workers=0)
    from torch import nn

    in_memory = tk.Extractor.from_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    with pytest.raises(ConfigError, match="recipe"):
        tk.embed_folder_ray(in_memory, flat_data, tmp_path / "s2")


def _store(tmp_path, n=6):
    store = tk.EmbeddingStore.create(tmp_path / "s", model_id={"backbone": "x", "dim": 4})
    rng = np.random.default_rng(0)
    store.upsert([{"id": f"r{i}", "path": f"/p{i}", "vector": rng.normal(size=4)} for i in range(n // 2)])
    store.upsert([{"id": f"r{i}", "path": f"/p{i}", "vector": rng.normal(size=4)} for i in range(n // 2, n)])
    return store


def test_commit_job_replaces_and_deletes_in_one_version(tmp_path):
    from transferkit.distributed.lance_fragments import commit_job, table_uri, write_fragments

    store = _store(tmp_path)
    uri, version = table_uri(str(store.path)), store.version
    frags = write_fragments(uri, {"id": ["r1", "new"], "path": ["/changed", "/new"]}, np.ones((2, 4)), dim=4,
                            storage_version=None)
    assert len(tk.EmbeddingStore.open(store.path)) == 6  # written, not committed
    new_version = commit_job(uri, read_version=version, fragments=frags, delete_ids=["r1", "r3", "r4", "r5", "gone"])
    assert new_version == version + 1
    rows = {r["id"]: r["path"] for r in tk.EmbeddingStore.open(store.path).rows(columns=["id", "path"])}
    assert rows == {"r0": "/p0", "r1": "/changed", "r2": "/p2", "new": "/new"}
    with pytest.raises(StoreError, match="another writer"):  # planned on the old version: refused, not mixed in
        commit_job(uri, read_version=version, fragments=frags, delete_ids=["r0"])


def test_actors_must_agree_on_precision(tmp_path):
    import json

    from transferkit.distributed.ray_embed import _agreed_inference
    from transferkit.errors import ModelMismatchError

    store = _store(tmp_path)
    info = lambda backend, precision: json.dumps({"backend": backend, "precision": precision})  # noqa: E731
    # fp32 vectors of either backend agree within the conversion check, as the local engine allows
    assert _agreed_inference({info("torch", "fp32"), info("openvino", "fp32")}, None, store)["precision"] == "fp32"
    with pytest.raises(ModelMismatchError, match="nothing was committed"):
        _agreed_inference({info("openvino", "bf16"), info("openvino", "fp32")}, None, store)
    with pytest.raises(ModelMismatchError, match="holds embeddings made with openvino bf16"):
        _agreed_inference({info("torch", "fp32")}, {"backend": "openvino", "precision": "bf16"}, store)


def test_a_workers_transferkit_error_reaches_the_driver_as_itself():
    from transferkit.distributed.ray_embed import _unwrap
    from transferkit.errors import ModelMismatchError

    class Wrapped(Exception):  # as Ray's task errors: the cause kept
        cause = ModelMismatchError("kept")

    assert str(_unwrap(Wrapped())) == "kept"
    # as Ray's ActorDiedError for a failed constructor: only the traceback's text
    died = RuntimeError("The actor died because of an error raised in its creation task\n  File ...\n"
                        "transferkit.errors.ModelMismatchError: The model rebuilt from X is not the one.\n")
    rebuilt = _unwrap(died)
    assert isinstance(rebuilt, ModelMismatchError) and str(rebuilt) == "The model rebuilt from X is not the one."
    other = RuntimeError("disk full")
    assert _unwrap(other) is other
