"""The backend/precision policy as a pure function: every CPU kind is a value passed in."""

from __future__ import annotations

import pytest
import torch

from transferkit.errors import ConfigError, MissingDependencyError
from transferkit.inference import policy
from transferkit.inference.cpu import CpuFeatures
from transferkit.inference.policy import (
    OPENVINO_MIN_ITEMS,
    OPENVINO_MIN_ITEMS_CACHED,
    OPENVINO_MIN_ITEMS_FP32,
    decide,
    reduced_dtype,
    training_autocast_choice,
    training_autocast_dtype,
    trains_depthwise,
)

AVX2_ONLY = CpuFeatures(avx2=True, model_name="AMD EPYC 7B13")
AMX = CpuFeatures(avx2=True, avx512f=True, avx512_bf16=True, amx_bf16=True, model_name="Intel Xeon")


def _never():
    raise AssertionError("asked although the answer did not depend on it")


def _cpu(backend="auto", precision="auto", **kw):
    kw.setdefault("cpu", AMX)
    kw.setdefault("openvino_available", True)
    return decide(backend, precision, device_type="cpu", **kw)


def test_thresholds_are_ordered():
    assert OPENVINO_MIN_ITEMS_CACHED < OPENVINO_MIN_ITEMS_FP32 < OPENVINO_MIN_ITEMS


@pytest.mark.parametrize("n, bf16_safe, cached, want", [
    (None, True, False, "openvino"), (OPENVINO_MIN_ITEMS, True, False, "openvino"), (OPENVINO_MIN_ITEMS - 1, True, False, "torch"),
    (OPENVINO_MIN_ITEMS_FP32, False, False, "openvino"), (OPENVINO_MIN_ITEMS_FP32 - 1, False, False, "torch"),
    (OPENVINO_MIN_ITEMS_FP32, True, False, "torch"),
    (OPENVINO_MIN_ITEMS_CACHED, True, True, "openvino"), (OPENVINO_MIN_ITEMS_CACHED - 1, True, True, "torch"),
    (OPENVINO_MIN_ITEMS_CACHED, True, False, "torch"),
])
def test_auto_backend_by_job_size(n, bf16_safe, cached, want):
    d = _cpu(expected_items=n, bf16_safe=bf16_safe, cached_conversion=cached)
    assert d.backend == want
    assert ("repay" in d.reason or "cached" in d.reason) if want == "openvino" else "do not repay" in d.reason


def test_lazy_questions_are_asked_only_when_they_matter():
    assert _cpu(expected_items=None, cached_conversion=_never).backend == "openvino"
    assert _cpu(expected_items=OPENVINO_MIN_ITEMS_CACHED - 1, cached_conversion=_never, openvino_available=_never).backend == "torch"
    asked = []
    d = _cpu(expected_items=OPENVINO_MIN_ITEMS_CACHED, cached_conversion=lambda: asked.append(1) or True)
    assert d.backend == "openvino" and asked == [1]
    assert decide("torch", "auto", device_type="cpu", cpu=AMX, openvino_available=_never).backend == "torch"


def test_missing_openvino():
    d = _cpu(openvino_available=False)
    assert d.backend == "torch" and "not installed" in d.reason
    with pytest.raises(MissingDependencyError, match="openvino package"):
        _cpu("openvino", openvino_available=False)


def test_other_devices_run_torch():
    for device in ("cuda", "mps"):
        d = decide("auto", "auto", device_type=device, cpu=AMX, openvino_available=_never)
        assert d.backend == "torch" and "CPU only" in d.reason
    with pytest.raises(ConfigError, match="CPU only"):
        decide("openvino", "auto", device_type="cuda", cpu=AMX, openvino_available=True)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="`backend` must be one of"):
        _cpu("tensorrt")
    with pytest.raises(ConfigError, match="`precision` must be one of"):
        _cpu(precision="int4")


def test_avx2_only_cpu_does_not_try_bf16():
    """The AMD EPYC (Zen 3) case: no native bf16, so auto runs fp32 on either backend, and says why."""
    for backend in ("torch", "openvino"):
        d = _cpu(backend, cpu=AVX2_ONLY)
        assert d.try_reduced is False and "no native bf16" in d.reason and d.bf16_skipped is None
    assert _cpu("openvino", "bf16", cpu=AVX2_ONLY).try_reduced is True  # forced: still bf16 (emulated)


def test_native_bf16_cpu_tries_bf16_unless_the_model_is_bf16_unsafe():
    d = _cpu(cpu=AMX)
    assert d.try_reduced is True and "natively" in d.reason
    unsafe = _cpu(cpu=AMX, bf16_safe=False)
    assert unsafe.try_reduced is False and unsafe.bf16_skipped == policy.BF16_UNSAFE
    assert _cpu("torch", "bf16", cpu=AMX, bf16_safe=False).try_reduced is True
    assert _cpu("torch", "fp32", cpu=AMX).try_reduced is False


def test_cuda_always_tries_amp_under_auto():
    for safe in (True, False):
        d = decide("auto", "auto", device_type="cuda", cpu=AVX2_ONLY, openvino_available=True, bf16_safe=safe)
        assert d.try_reduced is True and d.bf16_skipped is None
    assert decide("auto", "auto", device_type="mps", cpu=AMX, openvino_available=True).try_reduced is False


@pytest.mark.parametrize("device, precision, bf16_safe, gpu_bf16, want", [
    ("cuda", "auto", True, True, torch.bfloat16), ("cuda", "auto", False, True, torch.float16),
    ("cuda", "auto", True, False, torch.float16), ("cuda", "bf16", False, True, torch.bfloat16),
    ("cpu", "auto", False, False, torch.bfloat16), ("cpu", "bf16", True, False, torch.bfloat16),
])
def test_reduced_dtype(device, precision, bf16_safe, gpu_bf16, want):
    assert reduced_dtype(device, precision, bf16_safe=bf16_safe, gpu_bf16=gpu_bf16) == want


def _depthwise_net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 8, 3, groups=8), torch.nn.Conv2d(8, 8, 3, groups=8))


def test_depthwise_training_stays_fp32_on_bf16_cpus():
    cpu = torch.device("cpu")
    net = _depthwise_net()
    assert trains_depthwise(net) and training_autocast_dtype(cpu, "auto", net, cpu=AMX) is None
    net[1].weight.requires_grad_(False)  # half of the depthwise layers train: not "most"
    assert not trains_depthwise(net) and training_autocast_dtype(cpu, "auto", net, cpu=AMX) == torch.bfloat16
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    assert not trains_depthwise(plain) and training_autocast_dtype(cpu, "auto", plain, cpu=AMX) == torch.bfloat16
    assert training_autocast_dtype(cpu, "bf16", _depthwise_net(), cpu=AMX) == torch.bfloat16
    assert training_autocast_dtype(cpu, "fp32", plain, cpu=AMX) is None


def test_training_on_an_avx2_only_cpu_is_fp32_unless_forced():
    cpu = torch.device("cpu")
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    dtype, why = training_autocast_choice(cpu, "auto", plain, cpu=AVX2_ONLY)
    assert dtype is None and "no native bf16" in why
    assert training_autocast_dtype(cpu, "bf16", plain, cpu=AVX2_ONLY) == torch.bfloat16


def test_training_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    cuda = torch.device("cuda")
    assert training_autocast_dtype(cuda, "auto", cpu=AVX2_ONLY) == torch.float16
    assert training_autocast_dtype(cuda, "bf16", cpu=AVX2_ONLY) == torch.bfloat16
    assert training_autocast_dtype(cuda, "fp32") is None
