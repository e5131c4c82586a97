"""InferenceRunner: backend choice, the bf16 fidelity guard, the OpenVINO path and its cache."""

from __future__ import annotations

import pytest
import torch

from transferkit.accel import OPENVINO_MIN_ITEMS, InferenceRunner, openvino_available
from transferkit.backbones import create_backbone
from transferkit.errors import ConfigError

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino not installed")


@pytest.fixture
def backbone():
    torch.manual_seed(0)
    return create_backbone("tiny_cnn").eval()


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(8, 3, 32, 32)


def _ref(backbone, x):
    with torch.no_grad():
        return backbone(x)


def test_impossible_fidelity_bar_falls_back_to_fp32(backbone, x):
    r = InferenceRunner(backbone, input_size=32, backend="torch", precision="auto", min_cosine=1.01)
    out = r(x)
    assert r.info["precision"] == "fp32"
    torch.testing.assert_close(out, _ref(backbone, x), atol=1e-5, rtol=1e-5)


def test_explicit_fp32_is_exact_and_skips_the_check(backbone, x):
    r = InferenceRunner(backbone, input_size=32, backend="torch", precision="fp32")
    torch.testing.assert_close(r(x), _ref(backbone, x), atol=1e-5, rtol=1e-5)
    assert r.info["precision"] == "fp32" and "check_min_cosine" not in r.info


def test_auto_precision_output_meets_the_bar(backbone, x):
    r = InferenceRunner(backbone, input_size=32, backend="torch", precision="auto")
    out = r(x)
    cos = torch.nn.functional.cosine_similarity(out, _ref(backbone, x), dim=1)
    assert float(cos.min()) >= 0.999
    assert r.info["precision"] in ("fp32", "bf16")


def test_small_jobs_stay_on_torch(backbone):
    r = InferenceRunner(backbone, input_size=32, expected_items=OPENVINO_MIN_ITEMS - 1)
    assert r.backend == "torch"


def test_bad_options_are_config_errors(backbone):
    with pytest.raises(ConfigError, match="`backend` must be one of"):
        InferenceRunner(backbone, input_size=32, backend="tensorrt")
    with pytest.raises(ConfigError, match="`precision` must be one of"):
        InferenceRunner(backbone, input_size=32, precision="int4")
    with pytest.raises(ConfigError, match="CPU only"):
        InferenceRunner(backbone, input_size=32, backend="openvino", device="cuda")


@needs_openvino
def test_openvino_fp32_matches_torch_and_caches_the_conversion(backbone, x, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    r = InferenceRunner(backbone, input_size=32, backend="openvino", precision="fp32")
    torch.testing.assert_close(r(x), _ref(backbone, x), atol=1e-4, rtol=1e-4)
    assert r.info["backend"] == "openvino"
    cached = list((tmp_path / "openvino").glob("*.xml"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    r2 = InferenceRunner(backbone, input_size=32, backend="openvino", precision="fp32")
    torch.testing.assert_close(r2(x), _ref(backbone, x), atol=1e-4, rtol=1e-4)
    assert cached[0].stat().st_mtime_ns == before  # read from the cache, not converted again
    import sys

    assert sys.modules.get("openvino_telemetry", "absent") in (None, "absent")  # no usage telemetry sent
