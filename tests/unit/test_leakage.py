"""Leakage: exact and near copies of training images among evaluation images, the warning and the record."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from transferkit.curate.leakage import find_leakage, leakage_record, leakage_warning, top_candidates
from transferkit.errors import ConfigError


def _texture(rng, size=64):
    # smooth random pictures: thumbnails of two of them do not correlate, a copy's do
    small = rng.integers(0, 255, (8, 8, 3)).astype("uint8")
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def test_top_candidates_equal_brute_force_in_small_blocks():
    rng = np.random.default_rng(0)
    q, x = rng.normal(size=(9, 5)), rng.normal(size=(13, 5))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    qi, ti, sims = top_candidates(q, x, -1.0, k=3, block_elements=20)
    full = q @ x.T
    for j in range(9):
        assert ti[qi == j].tolist() == np.argsort(-full[j])[:3].tolist()
    np.testing.assert_allclose(sims, full[qi, ti], rtol=1e-5)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(1)
    train = []
    for i in range(6):
        train.append(tmp_path / f"train{i}.png")
        _texture(rng).save(train[-1])
    evals = [tmp_path / f"val{i}.png" for i in range(4)]
    _texture(rng).save(evals[0])
    Image.open(train[2]).resize((40, 40)).save(evals[1], quality=40, format="JPEG")  # a small re-encoded copy of train 2
    evals[2].write_bytes(train[4].read_bytes())  # train 4's bytes
    _texture(rng).save(evals[3])  # a different picture, given train 5's features below
    return [str(p) for p in train], [str(p) for p in evals]


def test_exact_and_near_copies_are_counted_once_each_and_pixels_reject_lookalikes(files):
    train_paths, eval_paths = files
    rng = np.random.default_rng(2)
    train = rng.normal(size=(6, 16))
    val = rng.normal(size=(4, 16))
    val[1] = train[2] + 0.3 * rng.normal(size=16)  # cosine ~0.9: a candidate the pixels must confirm
    val[3] = train[5] + 0.1 * rng.normal(size=16)  # very close features, different picture: no leak
    report = find_leakage(train_paths=train_paths, eval_paths=eval_paths, train_digests=[f"t{i}" for i in range(6)],
                          eval_digests=["v0", "v1", "t4", "v3"], train_features=train, eval_features=val)
    assert (report.num_exact, report.num_near, report.num_leaked) == (1, 1, 2)
    assert report.pairs[0] == {"eval": eval_paths[2], "train": train_paths[4], "similarity": 1.0, "kind": "exact"}
    assert report.pairs[1]["eval"] == eval_paths[1] and report.pairs[1]["train"] == train_paths[2]
    assert report.pairs[1]["kind"] == "near" and 0.75 <= report.pairs[1]["similarity"] < 1.0


def test_unreadable_files_fall_back_to_the_accept_cosine(tmp_path):
    rng = np.random.default_rng(3)
    train = rng.normal(size=(3, 8))
    val = np.stack([train[0] + 0.01 * rng.normal(size=8), train[1] + 0.5 * rng.normal(size=8)])
    report = find_leakage(train_paths=[str(tmp_path / f"gone{i}.jpg") for i in range(3)],
                          eval_paths=[str(tmp_path / "v0.jpg"), str(tmp_path / "v1.jpg")],
                          train_features=train, eval_features=val)
    assert report.num_near == 1 and report.pairs[0]["train"].endswith("gone0.jpg")  # cosine >= 0.95 only


def test_record_and_one_warning_for_both_splits(files):
    train_paths, eval_paths = files
    val = find_leakage(train_paths=train_paths, eval_paths=eval_paths[:3], train_digests=["a"] * 6,
                       eval_digests=["x", "y", "a"])
    test = find_leakage(train_paths=train_paths, eval_paths=eval_paths[3:], train_digests=["a"] * 6, eval_digests=["b"])
    record = leakage_record({"val": val, "test": test}, checked="exact")
    assert (record["num_leaked"], record["val"]["num_exact"], record["test"]["num_leaked"]) == (1, 1, 0)
    msg = leakage_warning({"val": record["val"], "test": record["test"]})
    assert msg.startswith("1 val images duplicate training images (1 exact, 0 near) (e.g. ") and "Hint:" in msg
    assert msg.split("Hint")[0].endswith("; val accuracy is optimistic. ")  # the clean test split is not named


def test_no_leakage_no_warning():
    report = find_leakage(train_paths=["a"], eval_paths=["b"], train_digests=["x"], eval_digests=["y"],
                          train_features=np.eye(2)[:1], eval_features=np.eye(2)[1:])
    assert report.num_leaked == 0 and report.warning() is None


def test_bad_threshold():
    with pytest.raises(ConfigError, match="`threshold` must be a similarity"):
        find_leakage(train_paths=[], eval_paths=[], threshold=0)


def test_large_inputs_take_an_ivf_index_and_find_the_same_near_copies():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(50, 32))
    x = centres[rng.integers(0, 50, 20_000)] + 0.6 * rng.normal(size=(20_000, 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    src = rng.choice(len(x), 300, replace=False)
    q = x[src] + 0.02 * rng.normal(size=(300, 32))  # near copies of training rows
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact = top_candidates(q, x, 0.95, k=1)
    ivf = top_candidates(q, x, 0.95, k=1, exact_max_work=0)  # forces the index
    assert sorted(zip(*map(np.ndarray.tolist, ivf[:2]))) == sorted(zip(*map(np.ndarray.tolist, exact[:2])))
    assert (ivf[1][np.argsort(ivf[0])] == src[np.sort(ivf[0])]).mean() >= 0.99 and len(ivf[0]) >= 297
    np.testing.assert_allclose(ivf[2], (q[ivf[0]] * x[ivf[1]]).sum(1), rtol=1e-4)
