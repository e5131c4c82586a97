"""The web app on a store made by a real pretrained model (efficientnet_lite0, shipped offline)."""

from __future__ import annotations

import shutil

import pytest

import transferkit as tk


@pytest.mark.slow
def test_search_with_efficientnet_lite0(tmp_path, helpers):
    data = tmp_path / "val"
    shutil.copytree(helpers.SAMPLE / "val", data)
    extractor = tk.Extractor.from_backbone("efficientnet_lite0")
    tk.embed_folder(extractor, data, tmp_path / "store", quiet=True)
    with helpers.make_client(tmp_path / "store") as c:
        info = c.get("/api/info").json()
        assert info["count"] == 80 and info["dim"] == 1280 and info["model"].startswith("efficientnet_lite0")
        ids = c.get("/api/points").json()["ids"]
        # neighbours of a pretrained model mostly share the query's label
        agree = []
        for qid in ids[::8]:
            results = c.get(f"/api/search?id={qid}&k=4").json()
            agree += [r["label"] == results[0]["label"] for r in results[1:]]
        assert sum(agree) / len(agree) >= 0.7
        item = c.get(f"/api/items/{ids[5]}").json()
        with open(item["path"], "rb") as f:
            r = c.post("/api/search", files={"file": ("q.jpg", f.read(), "image/jpeg")}, data={"k": "5"})
        results = r.json()
        assert results[0]["id"] == ids[5] and results[0]["score"] > 0.99
        assert [x["rank"] for x in results] == [1, 2, 3, 4, 5]
