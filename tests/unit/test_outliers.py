"""Outliers: blocked and faiss kNN against brute force, planted far images ranked first, class outliers, errors."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.curate import knn
from transferkit.curate.knn import drop_self, nearest_neighbours
from transferkit.curate.outliers import class_distances, find_outliers, robust_z
from transferkit.errors import ConfigError, DataError
from transferkit.store.store import EmbeddingStore

DIM = 16
MODEL = {"backbone": "tiny_cnn", "weights": "synthetic-seed0", "weights_digest": None,
         "preprocessing": {"input_size": 32}, "dim": DIM}


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute_knn(x, k):
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sims, idx, 1)


@pytest.mark.parametrize("block_elements", [50, 1000, 16 * 1024 * 1024])
def test_exact_neighbours_match_brute_force_in_any_block_size(monkeypatch, block_elements):
    monkeypatch.setattr(knn, "_BLOCK_ELEMENTS", block_elements)
    x = _unit(np.random.default_rng(0).normal(size=(57, 8)))
    nb = nearest_neighbours(x, 5, exact=True)
    idx, sims = _brute_knn(x, 5)
    assert nb.method == "exact"
    np.testing.assert_array_equal(nb.indices, idx)
    np.testing.assert_allclose(nb.similarities, sims, rtol=1e-5)
    assert not (nb.indices == np.arange(57)[:, None]).any()  # never the row itself


def test_drop_self_removes_the_row_or_else_the_last_entry():
    idx = np.array([[0, 3, 4], [2, 0, 1], [3, 4, 0]])  # row 2: an exact duplicate (3) outranked it, itself absent
    sims = np.array([[1.0, 0.9, 0.8], [1.0, 0.95, 0.9], [1.0, 0.99, 0.7]], dtype=np.float32)
    got_i, got_s = drop_self(idx, sims, np.array([0, 1, 2]), 2)
    assert got_i.tolist() == [[3, 4], [2, 0], [3, 4]]
    np.testing.assert_allclose(got_s, [[0.9, 0.8], [1.0, 0.95], [1.0, 0.99]])


def test_the_faiss_index_path_finds_nearly_the_exact_neighbours():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 32))
    x = _unit(centres[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 32)))
    approx = nearest_neighbours(x, 10, exact=False)
    exact = nearest_neighbours(x, 10, exact=True)
    assert approx.method == "in-memory IVF index" and approx.info["kind"] == "faiss-ivf-flat-ip"
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.indices.tolist(), exact.indices.tolist())])
    assert recall >= 0.9
    assert not (approx.indices == np.arange(3000)[:, None]).any()


def test_class_distances_are_leave_one_out_centroid_distances():
    rng = np.random.default_rng(2)
    x = _unit(rng.normal(size=(30, 6)))
    y = np.repeat([0, 1, 2], 10)
    own, near, near_d = class_distances(x, y, 3, block=7)
    for i in range(30):
        rest = np.delete(np.arange(30), i)
        c = x[rest][y[rest] == y[i]].sum(0)
        assert own[i] == pytest.approx(1 - x[i] @ c / np.linalg.norm(c), abs=1e-5)
        others = {k: 1 - x[i] @ x[y == k].sum(0) / np.linalg.norm(x[y == k].sum(0)) for k in range(3) if k != y[i]}
        assert near[i] == min(others, key=others.get) and near_d[i] == pytest.approx(min(others.values()), abs=1e-5)


def test_robust_z_ignores_the_extreme_values_it_scores():
    z = robust_z(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 100.0, np.nan]))
    # median 3.5, MAD 1.5 -> scale 2.2239
    assert z[5] == pytest.approx((100 - 3.5) / (1.5 * 1.4826)) and np.isnan(z[6])


def _store(tmp_path, x, labels):
    store = EmbeddingStore.create(tmp_path / "s", model_id={**MODEL, "dim": x.shape[1]})
    store.upsert([{"id": f"id{i:03d}", "path": f"/x/{i}.png", "relpath": f"{lab}/{i}.png", "label": lab, "split": "train",
                   "width": 4, "height": 3, "fingerprint": f"fp{i}", "size": 10, "mtime": 5, "vector": x[i]}
                  for i, lab in enumerate(labels)])
    return store


def test_planted_far_images_and_a_misplaced_image_rank_first(tmp_path):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, DIM)) * 3
    y = np.repeat([0, 1, 2], 40)
    x = centres[y] + 0.5 * rng.normal(size=(120, DIM))
    x[[10, 50, 90]] = rng.normal(size=(3, DIM)) * 3  # far from every cluster
    x[20] = centres[2] + 0.5 * rng.normal(size=DIM)  # labelled "a", lies among the "c" images
    labels = np.array(["a", "b", "c"])[y]
    report = find_outliers(_store(tmp_path, x, labels).path, k=5, top=10, quiet=True)
    assert {o.id for o in report.outliers[:3]} == {"id010", "id050", "id090"}
    assert [o.rank for o in report.outliers[:3]] == [1, 2, 3] and report.outliers[0].z >= 3.5
    assert report.num_flagged >= 3 and report.num_images == 120 and report.k == 5
    assert report.outliers[0].score >= report.outliers[1].score >= report.outliers[3].score
    misplaced = next(o for o in report.class_outliers if o.id == "id020")
    assert misplaced.rank <= 4 and misplaced.nearest_class == "c" and misplaced.same_label_neighbours == 0.0
    d = report.to_dict()
    assert d["neighbours"]["method"] == "exact" and len(d["outliers"]) == 10 and len(d["outliers"][0]["neighbours"]) == 3
    page = report.write_html(tmp_path / "o.html").read_text()
    assert 'id="far-from-everything"' in page and 'id="far-from-class"' in page


@pytest.mark.parametrize(("kwargs", "match"), [({"k": 0}, "`k` must be a positive integer; got 0"),
                                               ({"top": "many"}, "`top` must be a positive integer; got 'many'"),
                                               ({"z_threshold": float("nan")}, "`z_threshold` must be a finite number")])
def test_bad_parameters_are_config_errors(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        find_outliers(tmp_path, quiet=True, **kwargs)


def test_one_image_is_a_data_error(tmp_path):
    store = _store(tmp_path, np.ones((1, DIM), np.float32), ["a"])
    with pytest.raises(DataError, match="needs at least two images; .* has 1"):
        find_outliers(store, quiet=True)
