"""OpenVINO graphs written directly from the native ResNet / EfficientNet-Lite weights match eager PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.backbones import create_backbone
from transferkit.inference.openvino_backend import openvino_available, openvino_core
from transferkit.inference.openvino_graph import openvino_model
from transferkit.inference.runner import InferenceRunner

pytestmark = pytest.mark.skipif(not openvino_available(), reason="openvino not installed")


def _randomised(name: str, seed: int = 0) -> torch.nn.Module:
    """The backbone with random weights and random BatchNorm statistics (so the folding matters), in eval mode."""
    module = create_backbone(name, weights="none")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in module.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            if key.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif key.endswith(("running_mean", "bn1.bias", "bn2.bias", "bn3.bias")):
                t.copy_(torch.rand(t.shape, generator=gen) - 0.5)
            elif "bn" in key and key.endswith("weight"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
    return module.eval()


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "efficientnet_lite0"])
@pytest.mark.parametrize("size", [224, 97])  # 97: odd sizes, where TensorFlow "same" padding is asymmetric
def test_native_graph_matches_eager(name, size):
    module = _randomised(name)
    model = openvino_model(module, size)
    assert model is not None
    assert [tuple(d.get_length() if d.is_static else -1 for d in model.input(0).get_partial_shape())] == [(-1, 3, size, size)]
    compiled = openvino_core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = module(x).numpy()
    out = compiled(x.numpy())[0]
    assert out.shape == ref.shape == (3, module.num_features)
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99999
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3 * float(np.abs(ref).max()))


def test_other_modules_and_training_mode_get_no_native_graph():
    assert openvino_model(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()), 32) is None
    assert openvino_model(create_backbone("tiny_cnn", weights="none").eval(), 32) is None
    assert openvino_model(create_backbone("resnet18", weights="none").train(), 224) is None


def test_runner_converts_native_backbones_without_the_onnx_exporter(tmp_path, monkeypatch):
    from transferkit.inference.cache import ConversionCache

    exports = []
    real_export = torch.onnx.export

    def export(*args, **kwargs):
        exports.append(args)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)
    module = _randomised("efficientnet_lite0", seed=2)
    runner = InferenceRunner(module, input_size=64, backend="openvino", precision="fp32",
                             cache=ConversionCache(tmp_path / "cache"))
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    out = runner(x)
    with torch.no_grad():
        ref = module(x)
    assert exports == []
    assert runner.info["backend"] == "openvino" and runner.info["conversion_min_cosine"] > 0.99999
    assert torch.nn.functional.cosine_similarity(out, ref).min() > 0.99999
