"""Constants and helpers of the inference tests (fixtures are in conftest.py)."""

from __future__ import annotations

import pytest
import torch

from transferkit.inference.cpu import CpuFeatures
from transferkit.inference.openvino_backend import openvino_available

#: A CPU whose policy tries bf16 (AMX); the backends still run on this machine's CPU.
NATIVE_BF16 = CpuFeatures(avx2=True, avx512f=True, avx512_bf16=True, amx_bf16=True, model_name="test: AMX")
#: An AVX2-only CPU (AMD EPYC Zen 3).
AVX2_ONLY = CpuFeatures(avx2=True, model_name="test: AVX2 only")

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino not installed")
needs_native_bf16 = pytest.mark.skipif(not CpuFeatures.from_system().has_native_bf16,
                                       reason="needs a CPU with native bf16 (AMX/AVX512-BF16): OpenVINO runs bf16 as fp32 here")


def ref_of(backbone, x):
    with torch.no_grad():
        return backbone(x)


def uint8_batches(n_batches=3, size=32, seed=2):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (5 + i, size, size, 3), dtype=np.uint8) for i in range(n_batches)]
