"""A store's identity (model, resize kernel, backend, precision), queries made like its vectors,
extractor recipes, the incremental plan and progress events."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.data.folders import ImageEntry, row_id
from transferkit.embed.extractor import Extractor
from transferkit.embed.local import embed_folder
from transferkit.embed.plan import plan_embedding
from transferkit.errors import ConfigError, ModelMismatchError, StoreError
from transferkit.store.store import META_NAME, EmbeddingStore, same_model


def _photos(root: Path, n: int = 4, size=(61, 47)) -> Path:
    """Smooth, textured images (a resize kernel's differences show on them)."""
    for i in range(n):
        yy, xx = np.mgrid[0:size[1], 0:size[0]]
        arr = np.stack([128 + 100 * np.sin(xx / (5 + c + i) + yy / (7 + i)) for c in range(3)], -1).clip(0, 255)
        (root / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.astype("uint8")).save(root / ("a" if i % 2 else "b") / f"{i}.png")
    return root


def _fp32(**kw) -> Extractor:
    return Extractor.from_backbone("tiny_cnn", backend="torch", precision="fp32", **kw)


def _meta(store_path: Path) -> dict:
    return json.loads((store_path / META_NAME).read_text())


def _age_store(store_path: Path) -> None:
    """Make a store look written before the resize kernel and the inference record were part of it."""
    meta = _meta(store_path)
    meta.pop("inference", None)
    meta["model"].pop("resize")
    (store_path / META_NAME).write_text(json.dumps(meta))


def test_model_id_names_the_resize_kernel():
    fast, exact = _fp32(), _fp32(exact_resize=True)
    assert fast.model_id["resize"] == "torch-uint8" and exact.model_id["resize"] == "pil-exact"
    assert not same_model(fast.model_id, exact.model_id)
    old = {k: v for k, v in fast.model_id.items() if k != "resize"}
    assert same_model(old, fast.model_id) and not same_model(old, exact.model_id)  # missing: the old default


def test_first_commit_records_backend_and_precision(tmp_path):
    data = _photos(tmp_path / "d")
    ex = _fp32()
    embed_folder(ex, data, tmp_path / "s", progress=False)
    assert _meta(tmp_path / "s")["inference"] == {"backend": "torch", "precision": "fp32"}
    assert _meta(tmp_path / "s")["model"]["resize"] == "torch-uint8"


def test_auto_is_pinned_to_the_stores_record_and_an_explicit_other_one_refused(tmp_path):
    data = _photos(tmp_path / "d")
    embed_folder(_fp32(), data, tmp_path / "s", progress=False)
    _photos(tmp_path / "d" / "more", n=2)
    auto = Extractor.from_backbone("tiny_cnn")  # backend and precision "auto"
    rep = embed_folder(auto, data, tmp_path / "s", progress=False)
    assert rep.added == 2 and auto.precision == "fp32"
    assert (rep.inference["backend"], rep.inference["precision"]) == ("torch", "fp32")  # 2 images: torch
    bf16 = Extractor.from_backbone("tiny_cnn", precision="bf16")
    with pytest.raises(ModelMismatchError, match=r"precision fp32, but this extractor uses precision bf16.*new store"):
        embed_folder(bf16, data, tmp_path / "s", progress=False)
    # fp32 vectors of either backend agree within the conversion check: an fp32 store takes OpenVINO's
    ov = Extractor.from_backbone("tiny_cnn", backend="openvino", precision="fp32")
    ov.pin({"backend": "torch", "precision": "fp32"})
    assert (ov.backend, ov.precision) == ("openvino", "fp32")
    # ... but a bf16 store's backend is part of its identity
    auto = Extractor.from_backbone("tiny_cnn")
    auto.pin({"backend": "openvino", "precision": "bf16"})
    assert (auto.backend, auto.precision) == ("openvino", "bf16")
    torch_bf16 = Extractor.from_backbone("tiny_cnn", backend="torch")
    with pytest.raises(ModelMismatchError, match=r"backend openvino, but this extractor uses backend torch"):
        torch_bf16.pin({"backend": "openvino", "precision": "bf16"})


def test_stores_from_before_the_change_open_and_take_new_embeddings(tmp_path):
    data = _photos(tmp_path / "d")
    embed_folder(_fp32(), data, tmp_path / "s", progress=False)
    _age_store(tmp_path / "s")
    _photos(tmp_path / "d" / "more", n=2)
    rep = embed_folder(_fp32(), data, tmp_path / "s", progress=False)
    assert (rep.added, rep.unchanged, rep.num_rows) == (2, 4, 6)
    assert _meta(tmp_path / "s")["inference"] == {"backend": "torch", "precision": "fp32"}
    with pytest.raises(ModelMismatchError):  # the old default was PyTorch's resize, not PIL's
        embed_folder(_fp32(exact_resize=True), data, tmp_path / "s", progress=False)
    query = Extractor.from_store(EmbeddingStore.open(tmp_path / "s"))
    assert not query.exact_resize


@pytest.mark.parametrize("exact", [False, True])
def test_from_store_embeds_a_query_exactly_like_the_stored_vectors(tmp_path, exact):
    data = _photos(tmp_path / "d")
    embed_folder(_fp32(exact_resize=exact, channels_last=False), data, tmp_path / "s", progress=False)
    store = EmbeddingStore.open(tmp_path / "s")
    ex = Extractor.from_store(store)
    assert (ex.backend, ex.precision, ex.exact_resize) == ("torch", "fp32", exact)
    for row in store.rows():
        np.testing.assert_allclose(ex.embed_images([Image.open(row["path"])])[0], row["vector"], atol=1e-5)
        np.testing.assert_allclose(ex.embed_files([row["path"]])[0][0], row["vector"], atol=1e-5)
    with pytest.raises(ModelMismatchError):  # the other resize kernel is another identity
        Extractor.from_store(store, exact_resize=not exact)


def test_from_store_without_a_rebuildable_model(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", model_id={"backbone": "x", "weights": "w", "dim": 4})
    with pytest.raises(StoreError, match=r"records no model that can be rebuilt.*`vector` or `id`"):
        Extractor.from_store(store)


def test_recipe_is_json_and_rebuilds_the_same_extractor(tmp_path):
    data = _photos(tmp_path / "d")
    ex = _fp32(exact_resize=True)
    recipe = json.loads(json.dumps(ex.recipe))
    assert recipe["source"] == {"backbone": "tiny_cnn", "weights": "default"} and recipe["resize"] == "pil-exact"
    assert (recipe["backend"], recipe["precision"], recipe["device"]) == ("torch", "fp32", "cpu")
    again = Extractor.from_recipe(recipe)
    assert again.model_id == ex.model_id and (again.backend, again.precision, again.exact_resize) == ("torch", "fp32", True)
    files = sorted(str(p) for p in data.rglob("*.png"))
    np.testing.assert_allclose(again.embed_files(files)[0], ex.embed_files(files)[0], atol=1e-6)
    recipe["model_id"]["weights_digest"] = "something-else"
    with pytest.raises(ModelMismatchError, match="not the one the recipe was made from"):
        Extractor.from_recipe(recipe)
    import torch

    with pytest.raises(ConfigError, match="in-memory model has no recipe"):
        _ = Extractor.from_model(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                                     torch.nn.Flatten(), torch.nn.Linear(4, 2))).recipe


def test_plan_sorts_entries_into_todo_refresh_stale_and_unchanged(tmp_path):
    for name in ("same", "touched", "changed", "new", "relabelled"):
        (tmp_path / f"{name}.png").write_bytes(name.encode() * 10)
    from transferkit._hashing import file_digest

    def entry(name, label=""):
        return ImageEntry(tmp_path / f"{name}.png", f"{name}.png", label, "all")

    def row(name, **over):
        st = (tmp_path / f"{name}.png").stat()
        return {"id": row_id(f"{name}.png"), "path": str(tmp_path / f"{name}.png"), "relpath": f"{name}.png", "label": "",
                "split": "all", "fingerprint": file_digest(tmp_path / f"{name}.png"), "size": st.st_size,
                "mtime": st.st_mtime_ns, **over}

    existing = {r["id"]: r for r in (row("same"), row("touched", mtime=1), row("changed", fingerprint="old", mtime=1),
                                     row("relabelled"), {**row("same"), "id": "gone"})}
    entries = [entry("same"), entry("touched"), entry("changed"), entry("new"), entry("relabelled", label="cat")]
    plan = plan_embedding(entries, existing)
    assert [e.relpath for e in plan.todo] == ["changed.png", "new.png"]
    assert [e.relpath for e, _, _ in plan.refresh] == ["touched.png", "relabelled.png"]
    assert [e.relpath for e in plan.unchanged] == ["same.png"] and plan.stale == ["gone"]
    assert plan.is_update(row_id("changed.png")) and not plan.is_update(row_id("new.png"))


def test_progress_is_reported_as_events_or_not_at_all(tmp_path, capsys):
    data = _photos(tmp_path / "d", n=5)
    events = []
    embed_folder(_fp32(), data, tmp_path / "s", batch_size=2, progress=events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("advance") == 3
    assert {e.task for e in events} == {"embed"} and events[0].total == 5 and events[-1].completed == 5
    assert all(e.data["images_per_second"] > 0 for e in events if e.kind == "advance")
    capsys.readouterr()
    _photos(tmp_path / "d" / "more", n=2)
    embed_folder(_fp32(), data, tmp_path / "s", progress=False)
    assert capsys.readouterr().err == ""
    # nothing to embed: no task at all
    events.clear()
    embed_folder(_fp32(), data, tmp_path / "s", progress=events.append)
    assert events == []


def test_an_fp32_store_takes_fp32_vectors_of_the_other_backend_but_not_bf16(tmp_path, monkeypatch):
    from transferkit.embed.local import same_vectors

    assert same_vectors({"backend": "torch", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"})
    assert not same_vectors({"backend": "torch", "precision": "fp32"}, {"backend": "torch", "precision": "bf16"})
    assert not same_vectors({"backend": "openvino", "precision": "bf16"}, {"backend": "torch", "precision": "bf16"})
    # end to end: a store recorded as torch fp32 takes a later run that OpenVINO answers in fp32
    data = _photos(tmp_path / "d")
    embed_folder(_fp32(), data, tmp_path / "s", progress=False)
    _photos(tmp_path / "d" / "more", n=2)
    ov = Extractor.from_backbone("tiny_cnn", backend="openvino", precision="fp32")
    rep = embed_folder(ov, data, tmp_path / "s", progress=False)
    assert rep.added == 2 and rep.inference["backend"] == "openvino"
    assert _meta(tmp_path / "s")["inference"] == {"backend": "torch", "precision": "fp32"}


def test_a_store_of_random_weights_cannot_rebuild_its_model_for_a_query(tmp_path):
    data = _photos(tmp_path / "d")
    embed_folder(Extractor.from_backbone("tiny_cnn", weights="none", backend="torch", precision="fp32"), data,
                 tmp_path / "s", progress=False)
    from transferkit import EmbeddingStore

    store = EmbeddingStore.open(tmp_path / "s")
    with pytest.raises(StoreError, match=r"randomly initialised weights .*cannot embed a query image"):
        Extractor.from_store(store)
