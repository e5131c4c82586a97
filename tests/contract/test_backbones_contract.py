"""Every registered backbone answers the same questions (parametrised over the registry itself)."""

from __future__ import annotations

import re

import pytest
import torch
from PIL import Image

from transferkit.backbones import create_backbone, get_backbone_spec, list_backbones
from transferkit.training.model import TransferModel, load_model, save_model

#: Backbones whose default weights load offline; every other one is built with random weights.
_OFFLINE = {"tiny_cnn", "efficientnet_lite0"}

NAMES = list_backbones(include_test=True)


def _weights(name: str) -> str:
    return "default" if name in _OFFLINE else "none"


@pytest.fixture(scope="module", params=NAMES)
def backbone(request):
    torch.manual_seed(0)
    return create_backbone(request.param, weights=_weights(request.param)).eval()


def test_registry_lists_the_documented_backbones():
    assert {"resnet18", "resnet34", "resnet50", "mobilenet_v3_large", "efficientnet_lite0"} <= set(list_backbones())
    assert "tiny_cnn" not in list_backbones()
    assert "tiny_cnn" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_names_are_lower_snake_case(name):
    assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", name), name


def test_forward_gives_batch_by_num_features(backbone):
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, backbone.num_features)
    assert torch.isfinite(out).all()


def test_preprocessing_is_sane(backbone):
    pre = backbone.preprocessing
    spec = get_backbone_spec(backbone.name)
    assert pre == spec.weights.preprocessing
    assert len(pre.mean) == 3 and len(pre.std) == 3
    assert all(0.0 < m < 1.0 for m in pre.mean) and all(0.0 < s < 1.0 for s in pre.std)
    assert pre.resize_size >= pre.input_size >= 32
    assert pre.interpolation in ("nearest", "bilinear", "bicubic")
    x = pre.eval_transform()(Image.new("RGB", (50, 70), (128, 64, 32)))
    assert x.shape == (3, pre.input_size, pre.input_size)


def test_stages_are_ordered_disjoint_and_cover_the_parameters(backbone):
    stages = backbone.stages
    assert len(stages) >= 2 and all(stages)
    names = [m for s in stages for m in s]
    assert len(names) == len(set(names)), "a module is in two stages"
    # stages follow the forward order of the wrapped module's children
    order = [n for n, _ in backbone.model.named_modules()]
    positions = [order.index(m) for m in names]
    assert positions == sorted(positions)
    owner: dict[str, int] = {}
    for i in range(len(stages)):
        for p in backbone.stage_parameter_names(i):
            assert p not in owner, f"{p} is in stages {owner[p]} and {i}"
            owner[p] = i
    all_params = dict(backbone.named_parameters())
    assert set(owner) <= set(all_params)
    covered = sum(all_params[p].numel() for p in owner)
    total = sum(p.numel() for p in all_params.values())
    assert covered / total >= 0.99, f"stages cover only {covered / total:.1%} of the parameters"


def test_model_json_round_trip_gives_identical_outputs(backbone, tmp_path):
    torch.manual_seed(1)
    model = TransferModel(backbone, 3).eval()
    save_model(model, tmp_path, {"classes": ["a", "b", "c"]})
    loaded, meta = load_model(tmp_path)
    assert meta["backbone"] == backbone.name
    assert meta["num_features"] == backbone.num_features
    assert meta["preprocessing"] == backbone.preprocessing.to_dict()
    assert loaded.preprocessing == backbone.preprocessing
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_timm_backbone_builds_with_stages():
    bb = create_backbone("timm/resnet10t", weights="none").eval()
    assert bb.name == "timm/resnet10t" and bb.weights_tag == "none"
    assert bb.stages[-1] == ["layer4"] or "layer4" in bb.stages[-1]
    assert len(bb.stages) >= 4
    with torch.no_grad():
        assert bb(torch.randn(2, 3, 32, 32)).shape == (2, bb.num_features) == (2, 512)
    trainable = {p for i in range(len(bb.stages)) for p in bb.stage_parameter_names(i)}
    assert trainable == {n for n, _ in bb.named_parameters()}
