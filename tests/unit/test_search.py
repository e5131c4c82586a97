"""Exact/approximate search and retrieval metrics against brute-force numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.errors import ConfigError, StoreError
from transferkit.store.evaluate import retrieval_metrics
from transferkit.store.search import SemanticSearch, cosine_similarity, exact_topk


def _reference_topk(db, q, k):
    dbn = db / np.linalg.norm(db, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q)
    sims = dbn @ qn
    order = np.argsort(-sims, kind="stable")[:k]
    return order, sims[order]


def test_cosine_similarity_matches_formula():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([-2.0, 0.5, 4.0])
    expected = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert cosine_similarity(a, b) == pytest.approx(expected)
    assert cosine_similarity(a, 3 * a) == pytest.approx(1.0)
    assert cosine_similarity(a, -a) == pytest.approx(-1.0)


def test_cosine_similarity_errors():
    with pytest.raises(ConfigError, match="zero vector"):
        cosine_similarity([0, 0, 0], [1, 2, 3])
    with pytest.raises(ConfigError, match="same length; got 3 and 2"):
        cosine_similarity([1, 2, 3], [1, 2])


@pytest.mark.parametrize("k", [1, 5, 17, 200])
def test_semantic_search_equals_bruteforce(k):
    rng = np.random.default_rng(k)
    db = rng.normal(size=(200, 24)).astype(np.float32) * rng.uniform(0.5, 3, size=(200, 1)).astype(np.float32)
    labels = rng.integers(0, 3, 200)
    searcher = SemanticSearch(db, labels)
    for _ in range(5):
        q = rng.normal(size=24).astype(np.float32)
        idx, sims = searcher.search(q, top_k=k)
        ref_idx, ref_sims = _reference_topk(db.astype(np.float64), q.astype(np.float64), k)
        assert idx.shape == (k,) and sims.shape == (k,)
        np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
        # indices equal except where similarities tie
        diff = idx != ref_idx
        assert np.all(np.abs(sims[diff] - ref_sims[diff]) < 1e-5)
        assert np.all(np.diff(sims) <= 1e-7)  # best first


def test_semantic_search_top_k_capped_and_ties_ordered_by_index():
    db = np.array([[1, 0], [1, 0], [0, 1], [2, 0]], dtype=np.float32)
    idx, sims = SemanticSearch(db, ["a", "b", "c", "d"]).search(np.array([1.0, 0.0]), top_k=10)
    assert idx.tolist() == [0, 1, 3, 2]
    np.testing.assert_allclose(sims, [1, 1, 1, 0], atol=1e-6)


def test_semantic_search_errors():
    searcher = SemanticSearch(np.eye(3, dtype=np.float32), [0, 1, 2])
    with pytest.raises(ConfigError, match="zero vector"):
        searcher.search(np.zeros(3))
    with pytest.raises(ConfigError, match=r"shape \(4,\) but the database vectors have dimension 3"):
        searcher.search(np.ones(4))
    with pytest.raises(ConfigError, match="`top_k` must be a positive integer; got 0"):
        searcher.search(np.ones(3), top_k=0)
    with pytest.raises(ConfigError, match="`top_k` must be a positive integer; got 2.0"):
        searcher.search(np.ones(3), top_k=2.0)
    with pytest.raises(ConfigError, match="`labels_db` has 2 entries but `embeddings_db` has 3 rows"):
        SemanticSearch(np.eye(3), [0, 1])


def test_exact_topk_batched_matches_argsort():
    rng = np.random.default_rng(0)
    db = rng.normal(size=(500, 16)).astype(np.float32)
    q = rng.normal(size=(37, 16)).astype(np.float32)
    idx, sc = exact_topk(db, q, 10)
    full = q @ db.T
    ref = np.argsort(-full, axis=1)[:, :10]
    np.testing.assert_allclose(sc, np.take_along_axis(full, ref, axis=1), rtol=1e-5, atol=1e-5)
    assert (idx == ref).mean() > 0.99


def _metrics_reference(x, labels, k):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.asarray(labels)
    p, r, ap = [], [], []
    for i in range(len(x)):
        s = x @ x[i]
        s[i] = -np.inf
        top = np.argsort(-s, kind="stable")[:k]
        rel = labels[top] == labels[i]
        n_rel = (labels == labels[i]).sum() - 1
        p.append(rel.sum() / k)
        r.append(rel.sum() / n_rel if n_rel else 0.0)
        precs = np.cumsum(rel) / np.arange(1, k + 1)
        ap.append((precs * rel).sum() / min(k, n_rel) if n_rel else 0.0)
    return np.mean(p), np.mean(r), np.mean(ap)


def test_retrieval_metrics_match_reference():
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(3, 8))
    labels = rng.integers(0, 3, 60)
    x = (centers[labels] + 0.8 * rng.normal(size=(60, 8))).astype(np.float32)
    names = [f"c{i}" for i in labels]
    m = retrieval_metrics(x / np.linalg.norm(x, axis=1, keepdims=True), names, (1, 5, 10))
    assert m["num_queries"] == 60
    for k in (1, 5, 10):
        p, r, ap = _metrics_reference(x.astype(np.float64), names, k)
        assert m[f"p_at_{k}"] == pytest.approx(p, abs=1e-5)
        assert m[f"r_at_{k}"] == pytest.approx(r, abs=1e-5)
        assert m[f"map_at_{k}"] == pytest.approx(ap, abs=1e-5)
    assert 0.3 < m["p_at_5"] <= 1.0


def test_retrieval_metrics_perfect_separation():
    x = np.array([[1, 0], [0.99, 0.1], [0, 1], [0.1, 0.99]], dtype=np.float32)
    m = retrieval_metrics(x / np.linalg.norm(x, axis=1, keepdims=True), ["a", "a", "b", "b"], (1, 3))
    assert m["p_at_1"] == 1.0 and m["map_at_1"] == 1.0 and m["r_at_1"] == 1.0
    assert m["p_at_3"] == pytest.approx(1 / 3)


def test_retrieval_metrics_errors():
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ConfigError, match=r"`ks` must be positive integers; got \[0, 5\]"):
        retrieval_metrics(x, ["a", "b", "c"], (0, 5))
    with pytest.raises(StoreError, match="needs at least two labelled embeddings"):
        retrieval_metrics(x[:1], ["a"], (1,))
