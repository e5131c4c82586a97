"""The training recipe: layer-wise LR decay, gradual unfreezing, BatchNorm freezing, augmentation, mixing, the LR finder."""

from __future__ import annotations

import json
import math

import pytest
import torch

import transferkit as tk
from transferkit.backbones import create_backbone
from transferkit.cli import main
from transferkit.strategies import get_strategy
from transferkit.training.config import TrainConfig
from transferkit.training.lr_sweep import suggest_steepest, suggest_valley, sweep
from transferkit.training.model import TransferModel
from transferkit.training.optim import BatchMixer, freeze_batchnorm, make_criterion, param_groups, train_transform

FAST = {"model": "tiny_cnn", "num_workers": 0, "quiet": True, "head_lr": 0.05, "backbone_lr": 0.01, "batch_size": 8,
        "head_init": "random"}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TransferModel(create_backbone("tiny_cnn", weights="none"), 3)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(data="x", model="tiny_cnn", head_lr=0.05, backbone_lr=0.01, **kw)


# -- layer decay ---------------------------------------------------------------------------------


def test_layer_decay_gives_each_stage_its_rate(model):
    strategy = get_strategy("full")
    strategy.on_train_start(model)
    groups = param_groups(strategy, model, _cfg(layer_decay=0.5))
    n = len(model.backbone.stages)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["head"] == 0.05
    for i in range(n):
        assert lrs[f"backbone.stage{i}"] == pytest.approx(0.01 * 0.5 ** (n - 1 - i))
    # every trainable parameter in exactly one group
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)
    # no decay: one backbone group, as before
    assert [g["name"] for g in param_groups(strategy, model, _cfg())] == ["head", "backbone"]


def test_layer_decay_with_partial_splits_only_the_trainable_stages(model):
    strategy = get_strategy("partial", unfreeze_stages=2)
    strategy.on_train_start(model)
    names = [g["name"] for g in param_groups(strategy, model, _cfg(layer_decay=0.7))]
    n = len(model.backbone.stages)
    assert names == ["head", f"backbone.stage{n - 1}", f"backbone.stage{n - 2}"]


# -- gradual unfreezing --------------------------------------------------------------------------


def _trainable_stages(model) -> list[int]:
    return [i for i in range(len(model.backbone.stages))
            if any(p.requires_grad for m in model.backbone.stage_modules(i) for p in m.parameters())]


def test_gradual_unfreezes_one_stage_per_epoch_from_the_top(model):
    n = len(model.backbone.stages)
    strategy = get_strategy("gradual", frozen_epochs=1)
    strategy.on_train_start(model)
    assert _trainable_stages(model) == [] and all(p.requires_grad for p in model.head.parameters())
    changes = [strategy.on_epoch_start(model, e, None) for e in range(1, n + 3)]
    assert changes == [False] + [True] * n + [False]
    assert _trainable_stages(model) == list(range(n))
    fresh = get_strategy("gradual", frozen_epochs=1)
    fresh.load_state_dict(json.loads(json.dumps(get_strategy("gradual").state_dict() | {"epoch": 2})))
    other = TransferModel(create_backbone("tiny_cnn", weights="none"), 3)
    fresh.on_train_start(other)
    assert _trainable_stages(other) == [n - 1]  # epoch 2: one stage, restored from the state


def test_gradual_resumed_mid_schedule_matches_an_uninterrupted_run(split_data, tmp_path, stop_after_epoch):
    cfg = {**{k: v for k, v in FAST.items() if k != "quiet"}, "strategy": "gradual", "epochs": 4, "frozen_epochs": 1}
    full = tk.train(split_data, out=tmp_path / "full", quiet=True, **cfg)

    with pytest.raises(KeyboardInterrupt):
        tk.train(split_data, out=tmp_path / "cut", progress=stop_after_epoch(2), **cfg)
    resumed = tk.train(split_data, out=tmp_path / "cut", resume=True, quiet=True, **cfg)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(full.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    groups = [g["name"] for g in resumed.metrics["parameters"]["groups"]]
    assert groups == ["head", "backbone"]  # all stages unfrozen by epoch 4 (tiny_cnn has 3)
    assert resumed.history[0]["lr_backbone"] == 0 and resumed.history[1]["lr_backbone"] > 0


# -- recipe options ------------------------------------------------------------------------------


def test_freeze_bn_keeps_running_statistics(split_data, tmp_path):
    def bn_means(run):
        from safetensors.torch import load_file

        return {k: v for k, v in load_file(str(run.path / "model.safetensors")).items() if k.endswith("running_mean")}

    start = {k: v for k, v in TransferModel(create_backbone("tiny_cnn", weights="default"), 3).state_dict().items()
             if k.endswith("running_mean")}
    assert start, "tiny_cnn has BatchNorm layers"
    frozen = tk.train(split_data, strategy="full", epochs=1, out=tmp_path / "f", **FAST)
    moving = tk.train(split_data, strategy="full", epochs=1, out=tmp_path / "m", freeze_bn=False, **FAST)
    assert all(torch.equal(v, start[k]) for k, v in bn_means(frozen).items())
    assert any(not torch.equal(v, start[k]) for k, v in bn_means(moving).items())


def test_criterion_mixer_and_augmentation():
    assert make_criterion(_cfg(label_smoothing=0.1)).label_smoothing == 0.1
    mixer = BatchMixer.from_config(_cfg(mixup=0.2, cutmix=1.0), 3)
    x, y = torch.rand(8, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    xm, ym = mixer(x, y)
    assert xm.shape == x.shape and ym.shape == (8, 3) and torch.allclose(ym.sum(1), torch.ones(8))
    assert BatchMixer.from_config(_cfg(), 3) is None
    pre = create_backbone("tiny_cnn", weights="none").preprocessing
    names = [type(t).__name__ for t in train_transform(pre, _cfg(auto_augment="trivialaugment")).transforms]
    assert names[:3] == ["RandomResizedCrop", "RandomHorizontalFlip", "TrivialAugmentWide"]
    assert "RandAugment" in [type(t).__name__ for t in train_transform(pre, _cfg(auto_augment="randaugment")).transforms]
    assert "RandomResizedCrop" not in [type(t).__name__ for t in train_transform(pre, _cfg(augment=False)).transforms]


def test_recipe_trains_and_is_recorded(split_data, tmp_path):
    run = tk.train(split_data, strategy="partial", epochs=2, out=tmp_path / "r", label_smoothing=0.1, mixup=0.2, cutmix=1.0,
                   auto_augment="trivialaugment", layer_decay=0.8, **FAST)
    saved = json.loads((run.path / "model.json").read_text())["config"]
    assert (saved["label_smoothing"], saved["mixup"], saved["cutmix"], saved["auto_augment"], saved["layer_decay"]) == \
        (0.1, 0.2, 1.0, "trivialaugment", 0.8)
    assert all(math.isfinite(h["train_loss"]) for h in run.history) and len(run.history) == 2


@pytest.mark.parametrize("kw, match", [
    ({"layer_decay": 1.5}, "`layer_decay` must be in"), ({"layer_decay": 0}, "`layer_decay` must be a positive"),
    ({"label_smoothing": 1.0}, "`label_smoothing` must be a number >= 0 and < 1"), ({"mixup": -1}, "`mixup` must be"),
    ({"frozen_epochs": -1}, "`frozen_epochs` must be an int >= 0"), ({"lr": "fast"}, "`lr` must be 'auto'"),
])
def test_recipe_option_errors(kw, match):
    with pytest.raises(tk.ConfigError, match=match):
        _cfg(**kw)
    with pytest.raises(tk.UnknownNameError, match="trivialaugment"):
        _cfg(auto_augment="trivial")


def test_freeze_batchnorm_sets_eval(model):
    model.train()
    freeze_batchnorm(model)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns) and model.head.training


# -- the LR finder -------------------------------------------------------------------------------


def test_sweep_is_exponential_keeps_ratios_and_stops_on_divergence():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w], "lr": 1.0}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1}])
    seen = []

    def step():  # the loss falls until lr 1e-3, then blows up
        lr = opt.param_groups[0]["lr"]
        seen.append(opt.param_groups[1]["lr"] / lr)
        return 1.0 if lr < 1e-5 else 0.1 if lr < 1e-3 else 10.0 * lr * 1e4

    lrs, losses, raw, diverged, ratios = sweep(step, opt, num_steps=100)
    assert diverged and len(lrs) < 100 and ratios == [1.0, 0.1]
    assert all(r == pytest.approx(0.1) for r in seen)
    assert lrs[0] == pytest.approx(1e-7) and lrs[1] / lrs[0] == pytest.approx(10 ** (8 / 99))
    assert losses[-1] > 4 * min(losses[:-1])


def test_suggestions_on_a_known_curve():
    lrs = [10 ** (-7 + 8 * i / 99) for i in range(100)]
    # flat, then falling steepest around 1e-4, bottoming at 1e-2, then rising
    losses = [2.0 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 4))) + (0.5 * (math.log10(lr) + 2) ** 2 if lr > 1e-2 else 0)
              for lr in lrs]
    steep = suggest_steepest(lrs, losses)
    assert 10 ** -4.2 < steep < 10 ** -3.8
    valley = suggest_valley(lrs, losses)
    assert 1e-5 < valley < 1e-2  # inside the falling stretch, past its start


def test_lr_find_api_and_cli(split_data, tmp_path, capsys):
    r = tk.lr_find(split_data, strategy="feature-extraction", out=tmp_path / "lr", **FAST)
    assert len(r.lrs) == len(r.losses) >= 10 and r.lrs[0] == pytest.approx(1e-7)
    assert min(r.lrs) <= r.valley <= max(r.lrs) and min(r.lrs) <= r.steepest <= max(r.lrs)
    saved = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert saved["valley"] == r.valley and saved["suggestion"] == r.valley
    assert (tmp_path / "lr" / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    code = main(["lr-find", str(split_data), "--model", "tiny_cnn", "--strategy", "feature-extraction", "--head-init",
                 "random", "--num-workers", "0", "--num-steps", "30", "--out", str(tmp_path / "cli"), "--json", "-q"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["suggestion"] == out["valley"] > 0 and (tmp_path / "cli" / "lr_find.png").is_file()
    assert main(["lr-find", str(split_data), "--model", "tiny_cnn", "--num-steps", "3", "-q"]) == 2


def test_train_lr_auto_trains_at_the_suggestion_and_resume_keeps_it(split_data, tmp_path):
    out = tmp_path / "run"
    run = tk.train(split_data, strategy="partial", epochs=2, lr="auto", out=out, **{**FAST, "head_init": "fit"})
    found = run.metrics["lr_find"]
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["lr"] is None and cfg["head_lr"] == found["head_lr"] == found["valley"]
    assert cfg["backbone_lr"] == pytest.approx(found["valley"] * 0.01 / 0.05)
    assert json.loads((out / "model.json").read_text())["lr_find"]["valley"] == found["valley"]
    assert run.metrics["parameters"]["groups"][0]["lr"] == pytest.approx(found["head_lr"])
    assert (out / "lr_find.png").is_file()
    fe = tk.train(split_data, strategy="feature-extraction", lr="auto", out=tmp_path / "fe", **{**FAST, "head_init": "fit"})
    assert "closed form" in fe.metrics["lr_find"]["skipped"]
