"""/api/label-issues and /api/outliers over the sample's store: the report's JSON, cached per version, 400 for a bad store."""

from __future__ import annotations

import numpy as np

import transferkit as tk
from conftest import make_client


def test_label_issues_answer_the_reports_json_once_per_version(client, all_ids, monkeypatch):
    calls = []
    real = tk.find_label_issues
    monkeypatch.setattr(tk, "find_label_issues", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    first = client.get("/api/label-issues?top=3")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["num_images"] == 160 and body["classes"] == ["ants", "bees"] and body["cross_validation"]["folds"] == 5
    assert len(body["issues"]) == min(3, body["num_issues"])
    assert [i["rank"] for i in body["issues"]] == list(range(1, len(body["issues"]) + 1))
    assert all(i["id"] in all_ids and i["given_label"] != i["suggested_label"] for i in body["issues"])
    again = client.get("/api/label-issues?top=500").json()
    assert len(again["issues"]) == again["num_issues"] and again["issues"][:3] == body["issues"]
    assert len(calls) <= 1  # the session's client may have computed it before this test: at most once here


def test_outliers_list_both_rankings(client, all_ids):
    r = client.get("/api/outliers?top=5")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["num_images"] == 160 and body["k"] == 10
    assert [o["rank"] for o in body["outliers"]] == [1, 2, 3, 4, 5] and len(body["class_outliers"]) == 5
    scores = [o["score"] for o in body["outliers"]]
    assert scores == sorted(scores, reverse=True) and all(o["id"] in all_ids for o in body["outliers"])


def test_a_store_with_one_class_is_a_400_with_the_reason(tmp_path):
    model = {"backbone": "tiny_cnn", "weights": "synthetic-seed0", "weights_digest": None,
             "preprocessing": {"input_size": 32}, "dim": 4}
    store = tk.EmbeddingStore.create(tmp_path / "s", model_id=model)
    vecs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    store.upsert([{"id": f"i{i}", "path": f"/x/{i}.png", "relpath": f"{i}.png", "label": "ants", "split": "train", "width": 4,
                   "height": 3, "fingerprint": f"f{i}", "size": 1, "mtime": 1, "vector": vecs[i]} for i in range(8)])
    with make_client(store.path) as c:
        r = c.get("/api/label-issues")
        assert r.status_code == 400 and "at least two classes; got 1 (only 'ants')" in r.json()["error"]
        assert c.get("/api/label-issues?top=0").status_code == 422
