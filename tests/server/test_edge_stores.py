"""Stores the page must still handle: empty, one class, no labels, fewer images than a projection needs."""

from __future__ import annotations

import numpy as np
import pytest

import transferkit as tk


def _store_with(tmp_path, tiny_store, helpers, rows):
    src = tk.EmbeddingStore.open(tiny_store)
    ex = helpers.tiny_extractor()
    store = tk.EmbeddingStore.create(tmp_path / "edge", model_id=ex.model_id, source=ex.source,
                                     extra={"data_root": src.meta["data_root"]})
    store.upsert(rows)
    return store.path


def test_empty_store(tmp_path, tiny_store, helpers):
    path = _store_with(tmp_path, tiny_store, helpers, [])
    with helpers.make_client(path) as c:
        info = c.get("/api/info").json()
        assert info["count"] == 0 and info["labels"] == {} and info["dim"] == 32
        assert "empty" in info["notices"][0]
        for method in ("pca", "tsne"):
            body = c.get(f"/api/points?method={method}").json()
            assert (body["total"], body["count"], body["ids"], body["x"], body["labels"]) == (0, 0, [], [], [])
            assert c.get(f"/api/points?method={method}&format=f32").content == b""
        assert c.get("/api/search?id=anything").status_code == 404
        r = c.post("/api/search", files={"file": ("q.jpg", helpers.jpeg_bytes(), "image/jpeg")})
        assert r.status_code == 200 and r.json() == []


def test_one_class_store(tmp_path, tiny_store, helpers):
    ants = tk.EmbeddingStore.open(tiny_store).rows(label="ants")
    path = _store_with(tmp_path, tiny_store, helpers, ants)
    with helpers.make_client(path) as c:
        info = c.get("/api/info").json()
        assert info["labels"] == {"ants": 80} and "one colour" in info["notices"][0]
        body = c.get("/api/points?method=tsne").json()
        assert body["count"] == 80 and body["labels"] == ["ants"] and set(body["label"]) == {0}
        assert c.get("/api/search?id=x&label=bees").json()["error"].startswith("Unknown label 'bees'")
        results = c.get(f"/api/search?id={ants[0]['id']}&k=3&label=ants").json()
        assert [r["label"] for r in results] == ["ants"] * 3


def test_store_without_labels(tmp_path, tiny_store, helpers):
    rows = [{**r, "label": ""} for r in tk.EmbeddingStore.open(tiny_store).rows()[:30]]
    path = _store_with(tmp_path, tiny_store, helpers, rows)
    with helpers.make_client(path) as c:
        info = c.get("/api/info").json()
        assert info["labels"] == {"": 30} and "no labels" in info["notices"][0]
        body = c.get("/api/points").json()
        assert body["labels"] == [""] and body["label"] == [0] * 30
        sampled = c.get("/api/points?limit=7").json()
        assert sampled["count"] == 7 and sampled["sampled"] is True
        r = c.get(f"/api/search?id={rows[0]['id']}&k=4&label=")
        assert [x["rank"] for x in r.json()] == [1, 2, 3, 4] and r.json()[0]["id"] == rows[0]["id"]
        err = c.get(f"/api/search?id={rows[0]['id']}&label=ants").json()["error"]
        assert "Unknown label 'ants'" in err and "unlabelled" in err


@pytest.mark.parametrize("count", [1, 3])
def test_too_few_images_for_tsne_still_draw(tmp_path, tiny_store, helpers, count):
    rows = tk.EmbeddingStore.open(tiny_store).rows()[:count]
    path = _store_with(tmp_path, tiny_store, helpers, rows)
    with helpers.make_client(path) as c:
        body = c.get("/api/points?method=tsne").json()
        assert body["count"] == count and len(body["x"]) == count
        assert np.all(np.abs(body["x"]) <= 1.0) and body["notices"]
        if count == 1:
            assert (body["x"], body["y"]) == ([0.0], [0.0]) and "centre" in body["notices"][0]
        else:
            assert "this map is PCA" in body["notices"][0]
