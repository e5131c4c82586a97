"""Label issues: out-of-fold probabilities, confident learning on known probabilities, flipped labels found, errors."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.curate import crossval
from transferkit.curate.confident import class_thresholds, confident_joint, find_label_errors
from transferkit.curate.crossval import out_of_fold_probabilities
from transferkit.curate.label_issues import find_label_issues
from transferkit.errors import ConfigError, DataError
from transferkit.store.store import EmbeddingStore

DIM = 16
MODEL = {"backbone": "tiny_cnn", "weights": "synthetic-seed0", "weights_digest": None,
         "preprocessing": {"input_size": 32}, "dim": DIM}


def clusters(num_classes=4, per_class=60, dim=DIM, spread=0.5, num_flips=12, seed=0):
    """Gaussian clusters and labels with ``num_flips`` rows moved to another class: ``(x, true, noisy, flipped rows)``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    true = np.repeat(np.arange(num_classes), per_class)
    x = (centres[true] + spread * rng.normal(size=(len(true), dim))).astype(np.float32)
    flipped = np.sort(rng.choice(len(true), size=num_flips, replace=False))
    noisy = true.copy()
    noisy[flipped] = (true[flipped] + rng.integers(1, num_classes, size=num_flips)) % num_classes
    return x, true, noisy, flipped


def test_out_of_fold_probabilities_never_see_their_own_row():
    # one-hot features: a held-out row's feature column is zero in every training row, so its weights stay
    # zero and the head gives every held-out row of a fold the same probabilities (softmax of the bias),
    # whatever its label. A head that saw the row would give its own (random) label a high probability.
    n = 40
    labels = np.random.default_rng(0).integers(0, 2, size=n)
    labels[:4] = [0, 0, 1, 1]
    oof = out_of_fold_probabilities(np.eye(n, dtype=np.float32), labels, folds=4, l2=1e-3)
    for k in range(4):
        held = oof.folds == k
        probs = oof.probabilities[held]
        assert len(set(labels[held].tolist())) == 2  # both labels among the held-out rows ...
        np.testing.assert_allclose(probs, probs[:1].repeat(len(probs), 0), atol=1e-4)  # ... and the same answer for all
    assert oof.probabilities[np.arange(n), labels].max() < 0.8


def test_fit_is_the_training_heads_fitter():
    from transferkit.training import linear_head

    assert crossval.fit_softmax is linear_head.fit_softmax
    assert crossval.stratified_folds is linear_head.stratified_folds


def test_folds_are_stratified_and_every_row_gets_probabilities():
    x, _, noisy, _ = clusters()
    oof = out_of_fold_probabilities(x, noisy, folds=5, l2=1e-2)
    assert oof.probabilities.shape == (240, 4)
    np.testing.assert_allclose(oof.probabilities.sum(1), 1.0, atol=1e-5)
    for c in range(4):  # each class's rows dealt round-robin: fold sizes within one of each other
        counts = np.bincount(oof.folds[noisy == c], minlength=5)
        assert counts.sum() == np.sum(noisy == c) and counts.max() - counts.min() <= 1
    assert oof.l2 == 1e-2 and 0.9 <= oof.accuracy <= 0.96  # 12 of 240 labels are wrong


def test_flipped_labels_rank_on_top_with_the_true_label_suggested():
    x, true, noisy, flipped = clusters()
    oof = out_of_fold_probabilities(x, noisy, folds=5)
    found = find_label_errors(oof.probabilities, noisy)
    top = found.ranked[:len(flipped)]
    assert np.isin(top, flipped).mean() >= 0.9
    assert np.isin(found.flagged, found.ranked).all() and np.isin(found.flagged, flipped).mean() >= 0.9
    assert (found.suggested[flipped] == true[flipped]).mean() >= 0.9
    assert 8 <= found.estimated_num_issues <= 20


def test_confident_learning_on_known_probabilities():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.9],  # labelled 0; the last looks like a 1
                      [0.2, 0.8], [0.3, 0.7], [0.1, 0.9], [0.4, 0.6]])  # labelled 1
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(class_thresholds(probs, labels), [(0.9 + 0.8 + 0.7 + 0.1) / 4, (0.8 + 0.7 + 0.9 + 0.6) / 4])
    found = find_label_errors(probs, labels)
    # rows 5 and 7 reach neither threshold (0.625, 0.75): no confident class
    assert found.joint.tolist() == [[3, 1], [0, 2]]
    assert confident_joint(labels, np.array([0, 0, 0, 1, 1, -1, 1, -1]), 2).tolist() == [[3, 1], [0, 2]]
    assert found.ranked.tolist() == [3] and found.flagged.tolist() == [3] and found.suggested[3] == 1
    assert found.estimated_num_issues == pytest.approx(1.0)  # calibrated rows [3, 1] and [0, 4]: 1 image off the diagonal
    np.testing.assert_allclose(found.noise_matrix, [[0.75, 0.25], [0.0, 1.0]])


def test_a_label_that_is_still_the_most_probable_is_never_flagged():
    probs = np.array([[0.55, 0.45]] * 5 + [[0.45, 0.55]] * 5)
    found = find_label_errors(probs, np.array([0] * 5 + [1] * 5))
    assert found.flagged.size == 0 and found.ranked.size == 0


def test_the_ranking_orders_every_contradicted_label_by_its_probability():
    probs = np.array([[0.3, 0.7], [0.45, 0.55], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    labels = np.array([0, 0, 0, 1, 1, 1])  # rows 0, 1 (labelled 0) and 4 (labelled 1) are contradicted
    found = find_label_errors(probs, labels)
    assert found.ranked.tolist() == [0, 4, 1]  # given-label probability 0.3, 0.4, 0.45
    np.testing.assert_allclose(found.quality[found.ranked], [0.3, 0.4, 0.45])


def _store(tmp_path, x, labels, extra=()):
    store = EmbeddingStore.create(tmp_path / "s", model_id={**MODEL, "dim": x.shape[1]})
    rows = [{"id": f"id{i:03d}", "path": f"/x/{i}.png", "relpath": f"c/{i}.png", "label": str(lab), "split": "train",
             "width": 4, "height": 3, "fingerprint": f"fp{i}", "size": 10, "mtime": 5, "vector": x[i]}
            for i, lab in enumerate(labels)]
    store.upsert(rows + list(extra))
    return store


def test_find_label_issues_reads_a_store_and_reports(tmp_path):
    x, true, noisy, flipped = clusters(num_classes=3, per_class=40, num_flips=6, seed=3)
    names = np.array(["cat", "dog", "owl"])
    unlabelled = {"id": "zz", "path": "/x/z.png", "relpath": "z.png", "label": "", "split": "train", "width": 4, "height": 3,
                  "fingerprint": "fpz", "size": 1, "mtime": 1, "vector": x[0]}
    store = _store(tmp_path, x, names[noisy], [unlabelled])
    report = find_label_issues(store.path, folds=4, quiet=True)
    assert report.num_images == 120 and report.num_unlabelled == 1 and report.classes == ["cat", "dog", "owl"]
    flagged_ids = [i.id for i in report.issues[:6]]
    assert len(set(flagged_ids) & {f"id{i:03d}" for i in flipped}) >= 5
    first = report.issues[0]
    row = int(first.id[2:])
    assert first.rank == 1 and first.given_label == names[noisy[row]] and first.suggested_label == names[true[row]]
    assert 0.5 < first.score <= 1.0 and first.score == pytest.approx(1 - first.given_probability, abs=1e-5)
    d = report.to_dict()
    assert d["num_issues"] == len(report.issues) and d["cross_validation"]["folds"] == 4
    assert d["num_confident"] == sum(i.confident for i in report.issues) >= 5
    assert sum(c["count"] for c in d["confusions"]) == d["num_confident"]
    assert sum(v["issues"] for v in d["per_class"].values()) == len(report.issues)
    assert d["per_class"]["cat"]["images"] == int(np.sum(noisy == 0))
    page = report.write_html(tmp_path / "p.html").read_text()
    assert page.count('class="card"') == len(report.issues) and "http" not in page.replace("http-equiv", "")


def test_one_class_is_a_data_error(tmp_path):
    x, *_ = clusters(num_classes=2, per_class=10)
    store = _store(tmp_path, x, ["only"] * 20)
    with pytest.raises(DataError, match="at least two classes; got 1 \\(only 'only'\\)"):
        find_label_issues(store, quiet=True)


def test_a_class_smaller_than_the_folds_is_a_data_error():
    x, _, labels, _ = clusters(num_classes=2, per_class=10, num_flips=0)
    labels[:7] = 1  # class 0 keeps 3 rows
    with pytest.raises(DataError, match="Class '0' \\(3\\) has fewer images than the 5 cross-validation folds"):
        out_of_fold_probabilities(x, labels, folds=5)


@pytest.mark.parametrize(("kwargs", "match"), [({"folds": 1}, "`folds` must be an integer >= 2"),
                                               ({"l2": -1.0}, "`l2` must be a non-negative number or 'auto'"),
                                               ({"l2": "big"}, "`l2` must be a non-negative number or 'auto'")])
def test_bad_parameters_are_config_errors(kwargs, match):
    x, _, labels, _ = clusters(num_classes=2, per_class=10, num_flips=0)
    with pytest.raises(ConfigError, match=match):
        out_of_fold_probabilities(x, labels, **kwargs)


def test_bad_rank_by_is_a_config_error_before_anything_is_read(tmp_path):
    with pytest.raises(ConfigError, match="`rank_by` must be one of self_confidence, normalized_margin; got 'loss'"):
        find_label_issues(tmp_path / "nothing-here", rank_by="loss", quiet=True)


def test_l2_is_chosen_on_a_sample_of_a_large_first_fold(monkeypatch):
    monkeypatch.setattr(crossval, "L2_CHOICE_ROWS", 60)  # 192 training rows in the first fold: a sample of 60
    fits = []
    real = crossval.fit_softmax
    monkeypatch.setattr(crossval, "fit_softmax", lambda x, *a, **kw: fits.append(len(x)) or real(x, *a, **kw))
    x, true, noisy, flipped = clusters()
    oof = out_of_fold_probabilities(x, noisy, folds=5)
    grid = len(crossval.L2_GRID)
    assert fits[:grid] == [60] * grid  # the grid on the sample ...
    assert len(fits) == grid + 5 and sum(fits[grid:]) == 4 * 240  # ... then each fold on all its ~192 training rows
    assert set(oof.l2_log_loss) == set(crossval.L2_GRID) and oof.l2 == min(oof.l2_log_loss, key=oof.l2_log_loss.get)
    assert np.isin(find_label_errors(oof.probabilities, noisy).ranked[:12], flipped).mean() >= 0.9


def test_small_fits_run_on_one_thread_and_the_setting_is_restored():
    import torch

    before = torch.get_num_threads()
    with crossval._threads_for(crossval.SINGLE_THREAD_WORK - 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_a_store_given_twice_or_a_missing_split_is_refused(tmp_path):
    from transferkit.curate.source import load_rows
    from transferkit.errors import StoreError

    x, _, labels, _ = clusters(num_classes=2, per_class=10, num_flips=0)
    store = _store(tmp_path, x, labels)
    with pytest.raises(ConfigError, match="is a store already; `store` applies to an image folder only"):
        load_rows(store.path, store=tmp_path / "other")
    with pytest.raises(StoreError, match="No rows of the store .* are in `split` 'val'. Its splits: train"):
        load_rows(store, split="val")
    assert len(load_rows(store, split="train")) == 20
