"""Leakage: exact and near copies of training images among evaluation images, the warning and the record."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.curate.leakage import best_match, find_leakage
from transferkit.errors import ConfigError


def test_best_match_equals_brute_force_in_small_blocks():
    rng = np.random.default_rng(0)
    q, x = rng.normal(size=(9, 5)), rng.normal(size=(13, 5))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    best, sims = best_match(q, x, block_elements=20)
    full = q @ x.T
    np.testing.assert_array_equal(best, full.argmax(1))
    np.testing.assert_allclose(sims, full.max(1), rtol=1e-5)


def test_exact_and_near_copies_are_counted_once_each():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(6, 16))
    val = rng.normal(size=(4, 16))
    val[1] = train[2] * 2 + 0.01 * rng.normal(size=16)  # near copy of train 2 (scale does not matter)
    train_digests = [f"t{i}" for i in range(6)]
    val_digests = ["v0", "v1", "t4", "v3"]  # val 2 has train 4's bytes
    report = find_leakage(train_paths=[f"train/{i}.jpg" for i in range(6)], eval_paths=[f"val/{i}.jpg" for i in range(4)],
                          train_digests=train_digests, eval_digests=val_digests, train_features=train, eval_features=val,
                          threshold=0.95)
    assert (report.num_exact, report.num_near, report.num_leaked) == (1, 1, 2)
    assert report.pairs[0] == {"eval": "val/2.jpg", "train": "train/4.jpg", "similarity": 1.0, "kind": "exact"}
    assert report.pairs[1]["eval"] == "val/1.jpg" and report.pairs[1]["train"] == "train/2.jpg"
    assert report.pairs[1]["kind"] == "near" and 0.95 <= report.pairs[1]["similarity"] < 1.0
    msg = report.warning("val")
    assert msg.startswith("2 val images duplicate training images (1 exact, 1 near") and "Hint:" in msg
    assert report.to_dict()["num_leaked"] == 2


def test_no_leakage_no_warning():
    report = find_leakage(train_paths=["a"], eval_paths=["b"], train_digests=["x"], eval_digests=["y"],
                          train_features=np.eye(2)[:1], eval_features=np.eye(2)[1:])
    assert report.num_leaked == 0 and report.warning() is None


def test_bad_threshold():
    with pytest.raises(ConfigError, match="`threshold` must be a cosine similarity"):
        find_leakage(train_paths=[], eval_paths=[], threshold=0)
