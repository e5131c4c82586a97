"""Embedding on Ray Data (a real local Ray, 2 CPUs): the same store as the local engine, one atomic commit, faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import transferkit as tk
from transferkit.distributed import ray_embed
from transferkit.distributed.ray_stages import EmbedActor

from .conftest import SAMPLE, assert_same_search_eval, assert_same_store, by_id

REPO = Path(__file__).resolve().parents[2]


def _embed_both(data, tmp_path, backbone: str, **kw):
    ray_report = tk.embed_folder_ray(tk.Extractor.from_backbone(backbone), data, tmp_path / "ray", num_workers=2,
                                     batch_size=32, quiet=True, **kw)
    local_report = tk.embed_folder(tk.Extractor.from_backbone(backbone), data, tmp_path / "local", batch_size=32, quiet=True)
    return ray_report, local_report, tk.EmbeddingStore.open(tmp_path / "ray"), tk.EmbeddingStore.open(tmp_path / "local")


@pytest.mark.slow
def test_ray_store_is_the_local_store_on_the_sample(ray_cluster, tmp_path):
    """efficientnet_lite0 on the bundled sample: same rows, vectors, search-eval; each engine continues the other's store."""
    ray_report, local_report, ray_store, local_store = _embed_both(SAMPLE, tmp_path, "efficientnet_lite0")
    assert ray_report.added == local_report.added == 160 and not ray_report.skipped
    assert_same_store(ray_store, local_store)
    assert_same_search_eval(ray_store, local_store)
    assert ray_store.meta["engine"] == "ray" and local_store.meta["engine"] == "local"
    assert ray_store.meta["inference"] == local_store.meta["inference"]  # {backend, precision}, as the local engine records
    # the reverse direction: either engine finds the other's store up to date
    again = tk.embed_folder(tk.Extractor.from_backbone("efficientnet_lite0"), SAMPLE, tmp_path / "ray", quiet=True)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 160)
    again = tk.embed_folder_ray(tk.Extractor.from_backbone("efficientnet_lite0"), SAMPLE, tmp_path / "local", quiet=True)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 160)
    # and it searches and indexes as a local store does
    row = next(iter(by_id(ray_store).values()))
    assert ray_store.search(np.asarray(row["vector"]), top_k=1)[0]["id"] == row["id"]
    tk.build_index(ray_store)
    tk.build_index(local_store)
    found = [[r["id"] for r in tk.search_store(s, id=row["id"], top_k=5)] for s in (ray_store, local_store)]
    assert found[0] == found[1] and len(found[0]) == 5


@pytest.mark.slow
def test_ray_store_is_the_local_store_on_a_shared_dataset(ray_cluster, hymenoptera, tmp_path):
    ray_report, local_report, ray_store, local_store = _embed_both(hymenoptera, tmp_path, "tiny_cnn", fragment_rows=128)
    assert ray_report.added == local_report.added == len(local_store) > 300
    assert len(ray_store.table.to_lance().get_fragments()) >= 3  # several workers' fragments, one commit
    assert_same_store(ray_store, local_store)
    assert_same_search_eval(ray_store, local_store)


def _edit(data: Path) -> dict[str, Path]:
    """Remove one file, change one, touch one (same bytes), add two and a corrupt one."""
    bees, ants = data / "train" / "bees", data / "train" / "ants"
    files = sorted(bees.iterdir())
    files[0].unlink()
    with Image.open(files[1]) as im:
        im.convert("RGB").rotate(90).save(files[1], format="JPEG")
    os.utime(files[2], ns=(files[2].stat().st_atime_ns, files[2].stat().st_mtime_ns + 10**9))
    for k, src in enumerate(sorted(ants.iterdir())[:2]):
        with Image.open(src) as im:
            im.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(ants / f"new{k}.jpg")
    (ants / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return {"removed": files[0], "changed": files[1], "touched": files[2]}


_KILLED_DRIVER = """
import os, sys, transferkit as tk
def die_before_commit(event):
    if event.kind == "message" and event.data.get("stage") == "commit":
        os._exit(3)  # the driver dies with the workers' fragments written, before its commit
tk.embed_folder_ray(tk.Extractor.from_backbone("tiny_cnn"), sys.argv[1], sys.argv[2], address=sys.argv[3], num_workers=2,
                    batch_size=16, progress=die_before_commit)
"""


@pytest.mark.slow
def test_killed_driver_leaves_the_store_then_a_rerun_completes_it(ray_cluster, sample_copy, tmp_path):
    store_path = tmp_path / "store"
    tk.embed_folder_ray(tk.Extractor.from_backbone("tiny_cnn"), sample_copy, store_path, quiet=True, batch_size=32)
    before = tk.EmbeddingStore.open(store_path)
    version, rows = before.version, by_id(before)
    edited = _edit(sample_copy)
    data_files = lambda: sum(1 for _ in (store_path / "embeddings.lance" / "data").iterdir())  # noqa: E731
    files_before = data_files()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", _KILLED_DRIVER, str(sample_copy), str(store_path),
                           ray_cluster.get_runtime_context().gcs_address], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert data_files() > files_before  # the workers wrote their fragments ...
    after = tk.EmbeddingStore.open(store_path)
    assert after.version == version and by_id(after) == rows  # ... which no reader sees

    report = tk.embed_folder_ray(tk.Extractor.from_backbone("tiny_cnn"), sample_copy, store_path, quiet=True, batch_size=32)
    assert (report.added, report.updated, report.removed) == (2, 1, 1)
    assert report.unchanged == 158 and list(report.skipped) == [str(sample_copy / "train" / "ants" / "broken.jpg")]
    done = tk.EmbeddingStore.open(store_path)
    local = tk.embed_folder(tk.Extractor.from_backbone("tiny_cnn"), sample_copy, tmp_path / "local", quiet=True)
    assert list(local.skipped) == list(report.skipped)
    assert_same_store(done, tk.EmbeddingStore.open(tmp_path / "local"))
    touched = next(r for r in by_id(done).values() if r["path"] == str(edited["touched"]))
    assert touched["mtime"] == edited["touched"].stat().st_mtime_ns  # refreshed in the same commit


class DyingActor(EmbedActor):
    """An EmbedActor whose process exits on its first batch, once per marker file (Ray must restart it and retry)."""

    marker = ""  # set by the test; pickled with the class

    def __call__(self, batch):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return super().__call__(batch)


@pytest.mark.slow
def test_killed_worker_is_retried(ray_cluster, tmp_path, monkeypatch):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests package
    DyingActor.marker = str(tmp_path / "died")
    monkeypatch.setattr(ray_embed, "EmbedActor", DyingActor)
    report = tk.embed_folder_ray(tk.Extractor.from_backbone("tiny_cnn"), SAMPLE, tmp_path / "store", num_workers=1,
                                 batch_size=32, quiet=True)
    assert Path(DyingActor.marker).read_text().isdigit()  # an actor did die mid-job
    store = tk.EmbeddingStore.open(tmp_path / "store")
    assert report.added == len(store) == 160 and len(set(by_id(store))) == 160


def test_cli_embed_on_ray(ray_cluster, tmp_path, capsys):
    from transferkit.cli import main

    code = main(["embed", str(SAMPLE), "--model", "tiny_cnn", "--store", str(tmp_path / "s"), "--engine", "ray",
                 "--workers", "1", "--json", "--quiet"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == report["num_rows"] == 160 and report["inference"]["backend"] in ("torch", "openvino")
    assert main(["embed", str(SAMPLE), "--model", "tiny_cnn", "--store", str(tmp_path / "t"), "--workers", "3"]) == 2
    assert "--engine ray" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_writes_a_store_addressed_by_uri(ray_cluster, tmp_path):
    """The fragments, the commit and the metadata all follow the URI (object storage in production, file:// here)."""
    uri = f"file://{tmp_path}/ray-uri"
    report = tk.embed_folder_ray(tk.Extractor.from_backbone("tiny_cnn"), SAMPLE, uri, num_workers=2, batch_size=32, quiet=True)
    assert report.added == 160 and report.store == uri
    local = tk.embed_folder(tk.Extractor.from_backbone("tiny_cnn"), SAMPLE, tmp_path / "local", batch_size=32, quiet=True)
    assert local.added == 160
    assert (tmp_path / "ray-uri" / "embeddings.lance").is_dir()
    assert_same_store(tk.EmbeddingStore.open(uri), tk.EmbeddingStore.open(tmp_path / "local"))
