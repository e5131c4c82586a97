"""The head fitted to convergence on frozen features: the solver, feature extraction's one fit, fine-tuning from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from transferkit.data.folders import discover
from transferkit.embed.features import compute_features
from transferkit.errors import ConfigError, UnknownNameError
from transferkit.training.config import TrainConfig
from transferkit.training.linear_head import choose_l2, fit_linear_head, fit_softmax
from transferkit.training.model import load_model
from transferkit.training.trainer import train

FIT = {"model": "tiny_cnn", "num_workers": 0, "quiet": True, "batch_size": 8}


def _blobs(n_per_class=60, dim=16, classes=3, spread=1.5, seed=0):
    """Overlapping Gaussian classes with features on very different scales (standardisation matters)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    x = np.concatenate([centres[c] + spread * rng.normal(size=(n_per_class, dim)) for c in range(classes)])
    x = x * np.logspace(-2, 2, dim) + 5.0  # scales 0.01..100, offset: a raw-feature solver would struggle
    y = np.repeat(np.arange(classes), n_per_class)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


# -- the solver -------------------------------------------------------------------------------------


def test_fit_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = _blobs()
    l2 = 0.01
    fit = fit_linear_head(x, y, 3, l2=l2)
    ours = torch.softmax(x @ fit.weight.T + fit.bias, dim=1).numpy()
    # sklearn minimises 0.5 |W|^2 + C sum CE; ours mean CE + l2/2 |W|^2, the same at C = 1 / (n l2)
    z = StandardScaler().fit_transform(x.numpy().astype(np.float64))
    ref = LogisticRegression(C=1.0 / (len(y) * l2), max_iter=5000, tol=1e-10).fit(z, y.numpy()).predict_proba(z)
    assert np.abs(ours - ref).max() < 2e-3
    assert fit.l2 == l2 and fit.l2_log_loss == {}


def test_folded_weights_equal_the_standardised_model():
    x, y = _blobs(seed=1)
    fit = fit_linear_head(x, y, 3, l2=0.03)
    mean, std = x.mean(0), x.std(0, unbiased=False)
    w, b = fit_softmax((x - mean) / std, y, 3, 0.03)
    torch.testing.assert_close(x @ fit.weight.T + fit.bias, ((x - mean) / std) @ w + b, atol=2e-3, rtol=1e-4)


def test_auto_l2_is_the_lowest_cross_validated_log_loss():
    x, y = _blobs(n_per_class=40, spread=3.0, seed=2)  # noisy: too weak a penalty overfits
    fit = fit_linear_head(x, y, 3)
    assert fit.l2 == min(fit.l2_log_loss, key=fit.l2_log_loss.get)
    assert len(fit.l2_log_loss) >= 5
    z = (x - x.mean(0)) / x.std(0, unbiased=False)
    assert choose_l2(z, y, 3)[0] == fit.l2


def test_auto_l2_with_too_few_images_uses_the_middle_of_the_grid():
    x, y = _blobs(n_per_class=2)
    fit = fit_linear_head(x, y, 3)
    assert fit.l2_log_loss == {} and fit.l2 > 0


@pytest.mark.parametrize("bad", [-1.0, "x", True])
def test_bad_l2(bad):
    x, y = _blobs(n_per_class=5)
    with pytest.raises(ConfigError, match="`head_l2` must be a non-negative number or 'auto'"):
        fit_linear_head(x, y, 3, l2=bad)


@pytest.mark.parametrize("options, error, match", [
    ({"head_init": "zeros"}, UnknownNameError, "head_init"),
    ({"head_l2": "-1"}, ConfigError, "`head_l2` must be a non-negative number or 'auto'; got '-1'"),
    ({"head_l2": "strong"}, ConfigError, "`head_l2` must be a non-negative number or 'auto'; got 'strong'"),
])
def test_bad_head_options(options, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**options)


def test_head_l2_from_the_command_line_text():
    assert TrainConfig(head_l2="0.01").head_l2 == "0.01"  # validated; the trainer reads it as 0.01


# -- in training ------------------------------------------------------------------------------------


def _train_features(run_path, data):
    model, _ = load_model(run_path)
    splits = discover(data)
    fb = compute_features(model.backbone, splits.train, batch_size=16, device=torch.device("cpu"), num_workers=0,
                          backend="torch", precision="fp32")
    return model, fb


def test_feature_extraction_is_one_fit(split_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    run = train(split_data, strategy="feature-extraction", epochs=5, out=tmp_path / "run", precision="fp32", **FIT)
    m = run.metrics
    assert m["epochs_run"] == 1 and m["best_epoch"] == 1 and len(run.history) == 1
    assert m["head_fit"]["solver"] == "lbfgs" and m["head_fit"]["val_accuracy"] == pytest.approx(m["val_accuracy"])
    assert run.history[0]["val_accuracy"] == pytest.approx(m["val_accuracy"])
    # the saved head is the fit of the frozen features of the training images, with the l2 it chose
    model, fb = _train_features(run.path, split_data)
    ref = fit_linear_head(fb.features, fb.labels, model.num_classes, l2=m["head_fit"]["l2"])
    torch.testing.assert_close(model.head.weight, ref.weight, atol=1e-3, rtol=1e-3)
    assert json.loads((run.path / "model.json").read_text())["config"]["head_init"] == "fit"


def test_fine_tuning_starts_from_the_fitted_head(split_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    # learning rates too small to move anything: after one epoch the head is still the fit
    run = train(split_data, strategy="partial", epochs=1, out=tmp_path / "run", precision="fp32", head_lr=1e-12,
                backbone_lr=1e-12, augment=False, **FIT)
    m = run.metrics
    assert m["head_fit"]["l2"] > 0 and 0 <= m["best_epoch"] <= 1
    model, fb = _train_features(run.path, split_data)
    ref = fit_linear_head(fb.features, fb.labels, model.num_classes, l2=m["head_fit"]["l2"])
    torch.testing.assert_close(model.head.weight, ref.weight, atol=1e-3, rtol=1e-3)


def test_fitted_head_is_kept_when_fine_tuning_makes_it_worse(split_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    run = train(split_data, strategy="full", epochs=1, out=tmp_path / "run", precision="fp32", head_lr=50.0, backbone_lr=50.0,
                optimizer="sgd", scheduler="none", **FIT)  # a step this large wrecks the model
    m = run.metrics
    assert run.history[0]["val_accuracy"] < m["head_fit"]["val_accuracy"]
    assert m["best_epoch"] == 0 and m["val_accuracy"] == pytest.approx(m["head_fit"]["val_accuracy"])
    saved = load_file(str(run.path / "model.safetensors"))
    model, fb = _train_features(run.path, split_data)  # the backbone is the untouched pretrained one again
    ref = fit_linear_head(fb.features, fb.labels, model.num_classes, l2=m["head_fit"]["l2"])
    torch.testing.assert_close(saved["head.weight"], ref.weight, atol=1e-3, rtol=1e-3)
