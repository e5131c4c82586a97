"""Two recipe options: weight EMA (``ema``) and the input size chosen for small images (``input_size``)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

import transferkit as tk
from transferkit.backbones import create_backbone
from transferkit.cli import main
from transferkit.data.folders import ImageSet, discover
from transferkit.errors import ConfigError
from transferkit.training.config import TrainConfig
from transferkit.training.ema import WeightEMA, averaged
from transferkit.training.input_size import MIN_SIZE, auto_size, choose_input_size, measure_sides

FAST = {"model": "tiny_cnn", "num_workers": 0, "head_lr": 0.05, "backbone_lr": 0.01, "batch_size": 8,
        "head_init": "random", "strategy": "full"}


# -- weight EMA ------------------------------------------------------------------------------------


def test_ema_averages_with_the_warmed_up_decay_and_swaps_back():
    net = nn.Linear(2, 1, bias=False)
    ema = WeightEMA(0.9)
    values = [1.0, 3.0, 7.0, 7.0]
    expected = None
    for t, v in enumerate(values):
        with torch.no_grad():
            net.weight.fill_(v)
        decay = min(0.9, (1 + t) / (10 + t)) if t else None
        assert t == 0 or ema.current_decay() == pytest.approx(decay)
        ema.update(net)
        expected = v if expected is None else decay * expected + (1 - decay) * v
    assert ema.updates == 4
    assert float(ema.shadow["weight"][0, 0]) == pytest.approx(expected)
    with averaged(ema, net):
        assert float(net.weight.detach()[0, 0]) == pytest.approx(expected)
    assert float(net.weight.detach()[0, 0]) == 7.0  # the live weights are back
    with averaged(None, net):
        assert float(net.weight.detach()[0, 0]) == 7.0
    # a checkpoint's state restores the same average
    other = WeightEMA(0.9)
    other.load_state_dict(ema.state_dict(), net)
    assert other.updates == 4 and torch.equal(other.shadow["weight"], ema.shadow["weight"])


def test_train_with_ema_saves_the_validated_average(split_data, tmp_path):
    plain = tk.train(split_data, out=tmp_path / "plain", epochs=2, quiet=True, **FAST)
    run = tk.train(split_data, out=tmp_path / "ema", epochs=2, ema=0.99, quiet=True, **FAST)
    assert json.loads((run.path / "config.json").read_text())["config"]["ema"] == 0.99
    assert run.metrics["ema"] == 0.99
    saved, plain_saved = load_file(str(run.path / "model.safetensors")), load_file(str(plain.path / "model.safetensors"))
    # the EMA is warmed up, not equal to the last step's weights
    assert any(not torch.equal(saved[k], plain_saved[k]) for k in saved)
    # what was saved is what was validated at the best epoch
    best = next(h for h in run.history if int(h["epoch"]) == run.metrics["best_epoch"])
    assert run.evaluate(split_data, quiet=True, num_workers=0)["accuracy"] == pytest.approx(float(best["val_accuracy"]))


def test_ema_resumed_mid_run_matches_an_uninterrupted_run(split_data, tmp_path, stop_after_epoch):
    cfg = {**FAST, "epochs": 3, "ema": 0.95}
    full = tk.train(split_data, out=tmp_path / "full", quiet=True, **cfg)

    with pytest.raises(KeyboardInterrupt):
        tk.train(split_data, out=tmp_path / "cut", progress=stop_after_epoch(2), **cfg)
    resumed = tk.train(split_data, out=tmp_path / "cut", resume=True, quiet=True, **cfg)
    for a, b in zip(full.history, resumed.history, strict=True):
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-4)


@pytest.mark.parametrize("value", [1.0, -0.1, "0.9", True])
def test_bad_ema_is_a_config_error(value):
    with pytest.raises(ConfigError, match="ema"):
        TrainConfig(data="x", ema=value)


# -- input size ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("side", "weights", "size"), [
    (64, 224, 128),  # eurosat tiles
    (28, 224, MIN_SIZE),  # mnist digits: 2x is 56, below the floor
    (80, 224, 160),  # 2x, rounded up to a multiple of 32
    (112, 224, 224),  # exactly half: 2x is the weights' size anyway
    (150, 224, 224),  # not small
    (None, 224, 224),  # nothing measured
    (20, 32, 32),  # a small network is never enlarged
])
def test_auto_size(side, weights, size):
    assert auto_size(side, weights) == size


def test_measure_sides_reads_the_headers(tmp_path):
    for i, (w, h) in enumerate([(60, 40), (30, 90), (50, 50)]):
        Image.new("RGB", (w, h)).save(tmp_path / f"{i}.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    images = ImageSet(sorted(tmp_path.iterdir()), [0] * 4, ["a"])
    assert measure_sides(images) == {"median_short_side": 40.0, "median_long_side": 60.0, "measured": 3}


def test_train_auto_input_size_for_small_images_is_recorded_and_kept(split_data, tmp_path):
    # the synthetic images are 32-64 px; resnet18's weights expect 224
    cfg = {**FAST, "model": "resnet18", "weights": "none", "epochs": 1, "strategy": "partial"}
    run = tk.train(split_data, out=tmp_path / "r", quiet=True, **cfg)
    sides = measure_sides(discover(split_data).train)
    expected = auto_size(sides["median_short_side"], 224)
    assert expected < 224
    assert run.metrics["input_size"]["size"] == expected and run.metrics["input_size"]["weights_size"] == 224
    meta = json.loads((run.path / "model.json").read_text())
    assert meta["preprocessing"]["input_size"] == expected
    assert meta["preprocessing"]["resize_size"] == -(-expected * 256 // 224)  # the resize scaled alike
    predictions = run.predict(sorted((split_data / "val" / "red").iterdir())[:2], num_workers=0)
    assert len(predictions) == 2
    # an explicit size wins; so does the CLI's text
    fixed = tk.train(split_data, out=tmp_path / "fixed", quiet=True, input_size=224, **cfg)
    assert fixed.metrics["input_size"]["size"] == 224
    assert main(["train", str(split_data), "-o", str(tmp_path / "cli"), "--input-size", "80", "-m", "tiny_cnn",
                 "--epochs", "1", "--workers", "0", "-q"]) == 0
    assert json.loads((tmp_path / "cli" / "model.json").read_text())["preprocessing"]["input_size"] == 80


def test_a_model_with_a_fixed_input_size_keeps_it(split_data):
    vit = create_backbone("timm/vit_tiny_patch16_224", weights="none")
    pre, record = choose_input_size("auto", vit, discover(split_data).train)
    assert pre.input_size == 224 and record["size"] == 224 and "fixed input size" in record["reason"]
    pre, record = choose_input_size(96, create_backbone("resnet18", weights="none"), discover(split_data).train)
    assert pre.input_size == 96 and record["reason"] == "set to 96 px"


@pytest.mark.parametrize("value", ["big", 8, 4096, 1.5])
def test_bad_input_size_is_a_config_error(value):
    with pytest.raises(ConfigError, match="input_size"):
        TrainConfig(data="x", input_size=value)
