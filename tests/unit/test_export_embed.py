"""Embedding with an exported file (``onnx:FILE``, ``openvino:FILE.xml``): no PyTorch model, a store that records it."""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

import transferkit as tk


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    tk.export_model("tiny_cnn", out=folder / "tiny.onnx", quiet=True)
    tk.export_model("tiny_cnn", out=folder / "tiny.xml", format="openvino", quiet=True)
    return folder


@pytest.fixture(scope="module")
def torch_store(split_data, tmp_path_factory):
    store = tmp_path_factory.mktemp("stores") / "torch"
    tk.embed_folder(tk.Extractor.from_backbone("tiny_cnn", backend="torch", precision="fp32"), split_data, store, quiet=True)
    return store


def _vectors(store) -> dict[str, np.ndarray]:
    return {r["id"]: np.asarray(r["vector"]) for r in tk.EmbeddingStore.open(store).rows(columns=["id", "vector"])}


def _no_pytorch_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a PyTorch backbone was built")

    monkeypatch.setattr("transferkit.backbones.create_backbone", refuse)
    monkeypatch.setattr("transferkit.backbones._catalog.create_backbone", refuse)


@pytest.mark.parametrize("name", ["tiny.onnx", "tiny.xml"])
def test_embed_with_an_exported_file_matches_pytorch(exported, split_data, torch_store, tmp_path, monkeypatch, name):
    _no_pytorch_model(monkeypatch)
    fmt = "onnx" if name.endswith(".onnx") else "openvino"
    path = exported / name
    extractor = tk.Extractor.from_backbone(f"{fmt}:{path}")
    report = tk.embed_folder(extractor, split_data, tmp_path / "store", quiet=True)
    assert report.added == 48 and report.inference["backend"] == "openvino" and report.inference["precision"] == "fp32"
    ref, got = _vectors(torch_store), _vectors(tmp_path / "store")
    assert set(got) == set(ref)
    assert min(float(ref[k] @ got[k]) for k in ref) >= 0.9999
    store = tk.EmbeddingStore.open(tmp_path / "store")
    assert store.meta["source"] == {"backbone": f"{fmt}:{path.resolve()}", "weights": "default"}
    assert store.model_id["backbone"] == f"{fmt}:{name}" and store.model_id["exported"]["model"] == "tiny_cnn"
    assert tk.describe_model(store.model_id).startswith(f"{fmt}:{name} (weights synthetic-seed0, 32px, dim 32")
    assert store.meta["inference"] == {"backend": "openvino", "precision": "fp32"}
    again = tk.embed_folder(tk.Extractor.from_backbone(f"{fmt}:{path}"), split_data, tmp_path / "store", quiet=True)
    assert again.unchanged == 48 and again.added == 0


def test_search_by_image_in_an_exported_store(exported, split_data, tmp_path, monkeypatch):
    tk.embed_folder(tk.Extractor.from_backbone(f"onnx:{exported / 'tiny.onnx'}"), split_data, tmp_path / "store", quiet=True)
    _no_pytorch_model(monkeypatch)
    query = split_data / "val" / "green" / "img001.jpg"
    results = tk.search_store(tmp_path / "store", image=query, top_k=4)
    assert results[0]["path"] == str(query.resolve()) and results[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [r["label"] for r in results] == ["green"] * 4
    extractor = tk.Extractor.from_store(tk.EmbeddingStore.open(tmp_path / "store"))
    rebuilt = tk.Extractor.from_recipe(extractor.recipe)
    assert rebuilt.model_id == extractor.model_id and rebuilt.recipe["backend"] == "openvino"
    with pytest.raises(tk.ConfigError, match=r"runs the exported file and has no PyTorch module"):
        extractor.module  # noqa: B018 - the property is what raises


def test_the_store_is_bound_to_the_file_bytes(exported, split_data, torch_store, tmp_path):
    path = tmp_path / "model.onnx"
    shutil.copy(exported / "tiny.onnx", path)
    tk.embed_folder(tk.Extractor.from_backbone(f"onnx:{path}"), split_data, tmp_path / "store", quiet=True)
    with pytest.raises(tk.ModelMismatchError, match=r"holds embeddings from tiny_cnn .* but this model is onnx:tiny\.onnx"):
        tk.embed_folder(tk.Extractor.from_backbone(f"onnx:{exported / 'tiny.onnx'}"), split_data, torch_store, quiet=True)
    tk.export_model("tiny_cnn", weights="none", out=path, quiet=True)  # another model, same name
    with pytest.raises(tk.ModelMismatchError, match=r"holds embeddings from onnx:model\.onnx .* mixing them"):
        tk.Extractor.from_store(tk.EmbeddingStore.open(tmp_path / "store"))


@pytest.mark.slow
def test_efficientnet_lite0_onnx_embeddings_match_pytorch(tmp_path):
    data = tmp_path / "data"
    sample = Path(str(files("transferkit") / "sample_data" / "hymenoptera_mini" / "val"))
    for c in ("ants", "bees"):
        (data / c).mkdir(parents=True)
        for p in sorted((sample / c).iterdir())[:8]:
            shutil.copy(p, data / c / p.name)
    tk.export_model("efficientnet_lite0", out=tmp_path / "lite0.onnx", quiet=True)
    tk.embed_folder(tk.Extractor.from_backbone("efficientnet_lite0", backend="torch", precision="fp32"), data,
                    tmp_path / "torch", quiet=True)
    tk.embed_folder(tk.Extractor.from_backbone(f"onnx:{tmp_path / 'lite0.onnx'}"), data, tmp_path / "onnx", quiet=True)
    ref, got = _vectors(tmp_path / "torch"), _vectors(tmp_path / "onnx")
    assert len(got) == 16 and set(got) == set(ref)
    cosines = [float(ref[k] @ got[k]) for k in ref]
    assert min(cosines) >= 0.9999
    assert np.mean([float(ref[a] @ ref[b]) for a in ref for b in ref if a != b]) < 0.8  # distinct photos, distinct vectors


def test_exported_extractor_errors(exported, tmp_path):
    onnx_file = exported / "tiny.onnx"
    with pytest.raises(tk.ConfigError, match=r"An exported model runs on OpenVINO; `backend` 'torch' needs the PyTorch model"):
        tk.Extractor.from_backbone(f"onnx:{onnx_file}", backend="torch")
    with pytest.raises(tk.ConfigError, match=r"An exported model runs in fp32.*got `precision` 'bf16'"):
        tk.Extractor.from_backbone(f"onnx:{onnx_file}", precision="bf16")
    with pytest.raises(tk.ConfigError, match=r"runs on the CPU \(OpenVINO\); got `device` 'cuda'"):
        tk.Extractor.from_backbone(f"onnx:{onnx_file}", device="cuda")
    with pytest.raises(tk.ConfigError, match=r"`weights` does not apply to an exported model"):
        tk.Extractor.from_backbone(f"onnx:{onnx_file}", weights="none")
    with pytest.raises(tk.ConfigError, match=r"names a \.onnx file with the openvino: prefix.*here: onnx:"):
        tk.Extractor.from_backbone(f"openvino:{onnx_file}")
    with pytest.raises(tk.DataError, match=r"Exported model not found: .*missing\.onnx"):
        tk.Extractor.from_backbone(f"onnx:{tmp_path / 'missing.onnx'}")
    (tmp_path / "junk.onnx").write_text("hello")
    with pytest.raises(tk.ConfigError, match=r"junk\.onnx is not an ONNX model file"):
        tk.Extractor.from_backbone(f"onnx:{tmp_path / 'junk.onnx'}")
    (tmp_path / "junk.xml").write_text("<not-a-net/>")
    (tmp_path / "junk.bin").write_bytes(b"")
    with pytest.raises(tk.ConfigError, match=r"junk\.xml is not a model file OpenVINO can read"):
        tk.Extractor.from_backbone(f"openvino:{tmp_path / 'junk.xml'}")


def test_a_classifier_file_does_not_embed(tmp_path, split_data):
    run = tk.train(split_data, model="tiny_cnn", strategy="feature-extraction", epochs=1, num_workers=0, quiet=True,
                   out=tmp_path / "run")
    tk.export_model(run, out=tmp_path / "clf.onnx", quiet=True, runtime="openvino")
    with pytest.raises(tk.ConfigError, match=r"clf\.onnx is an exported classifier: its outputs are class scores.*--what embedder"):
        tk.Extractor.from_backbone(f"onnx:{tmp_path / 'clf.onnx'}")
