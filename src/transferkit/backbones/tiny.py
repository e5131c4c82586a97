"""Tiny backbones for tests: a few conv layers on 32x32 inputs, no downloads.

Their "pretrained" weights are a fixed seeded initialisation, labelled as such
everywhere (``synthetic-seed0``), so tests exercise the same code path as real weights.
"""

from __future__ import annotations

from ._registry import BackboneSpec, add_backbone
from ._spec import Preprocessing, WeightsInfo

PREPROCESSING = Preprocessing(input_size=32, resize_size=36, interpolation="bilinear")


def _build():
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    model = nn.Sequential()
    model.add_module("stem", block(3, 8))
    model.add_module("stage1", block(8, 16))
    model.add_module("stage2", block(16, 32))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flatten", nn.Flatten())
    return model, [["stem"], ["stage1"], ["stage2"]], 32


def _load(module) -> None:
    fresh, _, _ = _build_seeded()
    module.load_state_dict(fresh.state_dict())


def _build_seeded():
    import torch

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        return _build()
    finally:
        torch.random.set_rng_state(state)


add_backbone(
    BackboneSpec(
        name="tiny_cnn",
        family="test",
        build_fn=_build,
        weights=WeightsInfo(tag="synthetic-seed0", source="seeded random init (test backbone)", location="(none needed)",
                            preprocessing=PREPROCESSING),
        load_default_weights=_load,
        is_available_offline=lambda: True,
        description="3-conv test backbone, 32x32",
        is_test=True,
    )
)
