"""Duplicates: exact and IVF pair search against brute force, grouping, chain splitting, the copy kept, store reading, errors."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.curate.candidates import candidate_pairs
from transferkit.curate.duplicates import find_duplicates, group_duplicates, near_pairs
from transferkit.errors import ConfigError
from transferkit.store.store import EmbeddingStore

DIM = 8
MODEL = {"backbone": "tiny_cnn", "weights": "synthetic-seed0", "weights_digest": None,
         "preprocessing": {"input_size": 32}, "dim": DIM}


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("block_elements", [1, 7, 50, 10_000])
def test_near_pairs_match_brute_force_for_any_block_size(block_elements):
    rng = np.random.default_rng(0)
    x = _unit(rng.normal(size=(23, 4)))
    sims = x @ x.T
    truth = {(i, j) for i in range(23) for j in range(i + 1, 23) if sims[i, j] >= 0.6}
    assert 5 < len(truth) < 200  # the threshold makes a non-trivial case
    pairs, got_sims = near_pairs(x, 0.6, block_elements=block_elements)
    assert {tuple(p) for p in pairs.tolist()} == truth
    assert len(pairs) == len(truth)  # no pair reported twice
    np.testing.assert_allclose(got_sims, sims[pairs[:, 0], pairs[:, 1]], rtol=1e-5)


def _rows(n):
    return [{"id": f"id{i}", "path": f"/d/img{i}.jpg", "fingerprint": f"fp{i}", "width": 10, "height": 10}
            for i in range(n)]


def test_groups_exact_and_near_copies_and_keeps_the_largest():
    rng = np.random.default_rng(1)
    base = _unit(rng.normal(size=(6, DIM)) * 5)
    rows = _rows(6)
    vectors = base.copy()
    vectors[1] = _unit(base[0:1] + 0.01 * rng.normal(size=(1, DIM)))[0]  # a near copy of 0
    rows[1].update(width=20, height=20)  # ... at a larger size: it is the one to keep
    rows[4]["fingerprint"] = rows[3]["fingerprint"]  # same bytes as 3, vector unrelated
    rows[4]["path"] = "/d/a/much/longer/path/img4.jpg"
    report = group_duplicates(rows, vectors, threshold=0.95)
    by_keep = {g.keep: g for g in report.groups}
    assert set(by_keep) == {"id1", "id3"}
    assert by_keep["id1"].ids == ["id1", "id0"] and by_keep["id1"].kind == "near"
    assert 0.95 <= by_keep["id1"].min_similarity < 1.0
    assert by_keep["id3"].ids == ["id3", "id4"] and by_keep["id3"].kind == "exact"
    assert report.num_exact_pairs == 1 and report.num_near_pairs == 1 and report.num_removable == 2
    assert report.to_dict()["num_groups"] == 2


def test_chains_do_not_join_different_originals():
    # 0~1 and 1~2 are near pairs, 0~2 is not: 2 is no copy of the kept 0, so it leaves the group (and stays alone)
    angles = np.radians([0.0, 15.0, 30.0, 120.0])
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    report = group_duplicates(_rows(4), x, threshold=0.8, accept_threshold=0.95)
    assert [g.ids for g in report.groups] == [["id0", "id1"]]
    assert report.groups[0].min_similarity == pytest.approx(np.cos(np.radians(15.0)), abs=1e-5)


def test_a_split_off_chain_regroups_around_its_own_kept_image():
    # two originals (0 and 3) bridged by 1~2; 2 and 4 are copies of 3: {0, 1} and {3, 2, 4}, not one chain of five
    angles = np.radians([0.0, 14.0, 28.0, 40.0, 44.0])
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    rows = _rows(5)
    rows[3].update(width=20, height=20)  # the original of its group: kept
    report = group_duplicates(rows, x, threshold=0.8, accept_threshold=0.96)
    assert sorted(sorted(g.ids) for g in report.groups) == [["id0", "id1"], ["id2", "id3", "id4"]]
    assert {g.keep for g in report.groups} == {"id0", "id3"}


def test_ivf_candidates_match_the_exact_pairs():
    rng = np.random.default_rng(4)
    centres = _unit(rng.normal(size=(40, 16)))
    x = centres[rng.integers(0, 40, 4000)] + rng.normal(scale=0.25 / 4, size=(4000, 16))
    x = _unit(x)
    exact, exact_sims, how = candidate_pairs(x, 0.97)
    ivf, ivf_sims, how_ivf = candidate_pairs(x, 0.97, exact_max_work=0, nprobe=4)
    assert (how, how_ivf) == ("exact", "ivf") and len(exact) > 500
    e, a = {tuple(p) for p in exact.tolist()}, {tuple(p) for p in ivf.tolist()}
    assert a <= e and len(a) >= 0.95 * len(e)  # scores are exact (IVF-Flat): nothing extra, little missed
    np.testing.assert_allclose(ivf_sims, np.einsum("nd,nd->n", x[ivf[:, 0]], x[ivf[:, 1]]), rtol=1e-5)


def test_no_duplicates_gives_no_groups():
    x = np.eye(5, dtype=np.float32)
    report = group_duplicates(_rows(5), x, threshold=0.5)
    assert report.groups == [] and report.num_removable == 0


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, "high", None])
def test_bad_threshold_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="`threshold` must be a similarity in \\(0, 1\\]"):
        group_duplicates(_rows(2), np.eye(2, dtype=np.float32), threshold=bad)


def test_find_duplicates_reads_a_store(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", model_id=MODEL)
    rng = np.random.default_rng(2)
    vecs = rng.normal(size=(5, DIM)).astype(np.float32)
    vecs[2] = vecs[0] * 3  # same direction: cosine 1 after normalisation
    vecs[3] = vecs[1] + 0.3 * np.linalg.norm(vecs[1]) / np.sqrt(DIM) * rng.normal(size=DIM)  # cosine ~0.95: a candidate
    rows = [{"id": f"id{i}", "path": f"/x/{i}.png", "relpath": f"{i}.png", "label": "a", "split": "train",
             "width": 4, "height": 3, "fingerprint": f"fp{i}", "size": 10, "mtime": 5, "vector": vecs[i]} for i in range(5)]
    rows[4]["split"] = "val"
    store.upsert(rows)
    report = find_duplicates(tmp_path / "s", threshold=0.8, accept_threshold=0.999)
    assert [g.ids for g in report.groups] == [["id0", "id2"]]
    assert report.num_images == 5
    # the files are gone (as in a store whose images moved): no pixel check, so cosine >= accept decides (0~2 yes, 1~3 no)
    assert report.extra["pixel_unreadable"] == 4 and report.extra["candidates_by"] == "exact"
    assert report.extra["num_candidates"] == 2
    assert find_duplicates(store, threshold=0.99, split="val").num_images == 1
    assert store.to_arrow(columns=["id"], split="train").num_rows == 4


def test_find_duplicates_range_searches_the_stores_ivf_index(tmp_path, monkeypatch):
    from transferkit.store.index import build_index

    rng = np.random.default_rng(5)
    x = _unit(rng.normal(size=(3000, 32)))
    x[-20:] = _unit(x[:20] + 0.01 * rng.normal(size=(20, 32)))  # 20 near copies (cosine > 0.99)
    store = EmbeddingStore.create(tmp_path / "s", model_id=MODEL | {"dim": 32})
    store.upsert([{"id": f"id{i:04d}", "path": "", "fingerprint": f"fp{i}", "vector": x[i]} for i in range(len(x))])
    exact = find_duplicates(store, threshold=0.97)
    build_index(store, kind="ivf", quiet=True)
    monkeypatch.setattr("transferkit.curate.candidates.EXACT_MAX_WORK", 0)  # this small store counts as large
    by_index = find_duplicates(store, threshold=0.97)
    assert (exact.extra["candidates_by"], by_index.extra["candidates_by"]) == ("exact", "store-ivf")
    assert len(exact.groups) == 20 and [g.ids for g in by_index.groups] == [g.ids for g in exact.groups]
