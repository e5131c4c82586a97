"""Backend and precision decisions, as pure functions of what is known about the job and the machine.

:func:`decide` answers for frozen inference (which backend, whether reduced precision is tried,
and why); :func:`training_autocast_dtype` for fine-tuning. Neither reads the machine itself:
the caller passes the :class:`~transferkit.inference.cpu.CpuFeatures` (default: this machine's),
so every branch can be tested on any CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..errors import ConfigError, MissingDependencyError
from .cpu import CpuFeatures

BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "fp32", "bf16")
#: ``auto`` converts to OpenVINO only for workloads that repay the one-off conversion (a few seconds, cached on disk).
OPENVINO_MIN_ITEMS = 256
#: ... or, once a checked conversion of the same weights is cached, from this many images on
#: (160 photos, EfficientNet-Lite0 on a warm cache: 3.4 s on OpenVINO against 7.3 s on torch).
OPENVINO_MIN_ITEMS_CACHED = 32
#: ... or, for a model that torch runs in fp32 because bf16 distorts it (``bf16_safe=False``), from this many
#: (EfficientNet-Lite0's eager fp32 forward is 3.6x slower than OpenVINO's; cold, 128 photos: 4.5 s against 6.3 s).
OPENVINO_MIN_ITEMS_FP32 = 128
BF16_UNSAFE = "known to miss the fidelity bar for this model"


@dataclass(frozen=True)
class InferenceDecision:
    """What :func:`decide` chose.

    Attributes:
        backend: ``torch`` or ``openvino``.
        try_reduced: whether reduced precision runs at all (bf16 on the CPU, AMP on CUDA): forced by
            ``precision="bf16"``, or tried by ``auto`` under the fidelity check.
        reason: why, in one sentence per decision (backend; precision).
        bf16_skipped: why ``auto`` does not try bf16 for this model (None when it does, or was not asked).
    """

    backend: str
    try_reduced: bool
    reason: str
    bf16_skipped: str | None = None


def validate(backend: str, precision: str) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"`backend` must be one of {', '.join(BACKENDS)}; got {backend!r}.")
    if precision not in PRECISIONS:
        raise ConfigError(f"`precision` must be one of {', '.join(PRECISIONS)}; got {precision!r}.")


def decide(backend: str, precision: str, *, device_type: str, cpu: CpuFeatures, openvino_available: bool | Callable[[], bool],
           bf16_safe: bool = True, expected_items: int | None = None,
           cached_conversion: bool | Callable[[], bool] = False) -> InferenceDecision:
    """The backend and whether to try reduced precision for a frozen ``(B, 3, H, W) -> (B, D)`` model.

    Args:
        backend, precision: as requested (``auto``, or a forced choice).
        device_type: ``cpu``, ``cuda``, ``mps``; OpenVINO runs on the CPU only.
        cpu: the CPU's features; ``auto`` tries bf16 on a CPU only where it is native.
        openvino_available: whether the openvino package imports (a callable is asked only when it matters:
            importing openvino takes a while).
        bf16_safe: False for a model known to fail the bf16 fidelity bar: ``auto`` does not try bf16.
        expected_items: images to run (None = many); ``auto`` picks OpenVINO from :data:`OPENVINO_MIN_ITEMS`
            on, :data:`OPENVINO_MIN_ITEMS_FP32` for a bf16-unsafe model, :data:`OPENVINO_MIN_ITEMS_CACHED`
            when the conversion is cached.
        cached_conversion: whether a checked conversion of these weights is cached; a callable is asked
            only when the answer depends on it (the weights' key can cost a model build).

    Raises:
        ConfigError: an unknown option, or OpenVINO asked for on another device.
        MissingDependencyError: OpenVINO asked for but not installed.
    """
    validate(backend, precision)
    if device_type != "cpu":
        if backend == "openvino":
            raise ConfigError(f"`backend` 'openvino' runs on the CPU only; got `device` {device_type!r}. "
                              "Choose the torch (or auto) backend for it.")
        chosen, why_backend = "torch", f"OpenVINO runs on the CPU only, so {device_type} runs PyTorch"
    elif backend == "auto":
        chosen, why_backend = _auto_backend(openvino_available, bf16_safe, expected_items, cached_conversion)
    elif backend == "openvino" and not _ask(openvino_available):
        raise MissingDependencyError("`backend` 'openvino' needs the openvino package (pip install openvino); "
                                     "or choose the torch backend.")
    else:
        chosen, why_backend = backend, f"{backend} was asked for"
    try_reduced, why_precision, skipped = _reduced(precision, device_type, cpu, bf16_safe)
    return InferenceDecision(chosen, try_reduced, f"{why_backend}; {why_precision}", skipped)


def _ask(answer: bool | Callable[[], bool]) -> bool:
    return bool(answer() if callable(answer) else answer)


def _auto_backend(available: bool | Callable[[], bool], bf16_safe: bool, n: int | None,
                  cached: bool | Callable[[], bool]) -> tuple[str, str]:
    if n is None:
        why = "many images repay OpenVINO's one-off conversion"
    elif n >= OPENVINO_MIN_ITEMS:
        why = f"{n} images (>= {OPENVINO_MIN_ITEMS}) repay OpenVINO's one-off conversion"
    elif not bf16_safe and n >= OPENVINO_MIN_ITEMS_FP32:
        why = f"{n} images (>= {OPENVINO_MIN_ITEMS_FP32}) of a model that PyTorch runs in fp32 repay the conversion"
    elif n >= OPENVINO_MIN_ITEMS_CACHED and _ask(cached):
        why = f"{n} images (>= {OPENVINO_MIN_ITEMS_CACHED}) and the conversion is cached"
    else:
        return "torch", f"{n} images do not repay converting for OpenVINO (from {OPENVINO_MIN_ITEMS}, or " \
                        f"{OPENVINO_MIN_ITEMS_CACHED} once cached)"
    if not _ask(available):
        return "torch", "OpenVINO is not installed"
    return "openvino", why


def _reduced(precision: str, device_type: str, cpu: CpuFeatures, bf16_safe: bool) -> tuple[bool, str, str | None]:
    if precision == "fp32":
        return False, "fp32 was asked for", None
    if precision == "bf16":
        return True, "bf16 was asked for (no fidelity check)", None
    if device_type == "cuda":
        return True, "CUDA tries AMP under the fidelity check", None
    if not bf16_safe:
        return False, f"fp32: bf16 is {BF16_UNSAFE}", BF16_UNSAFE
    if device_type != "cpu":
        return False, f"fp32: reduced precision is tried on CUDA and on CPUs with native bf16, not on {device_type}", None
    if cpu.has_native_bf16:
        return True, "the CPU computes bf16 natively (AMX/AVX512-BF16): bf16 is tried under the fidelity check", None
    return False, "fp32: the CPU has no native bf16 (no AMX/AVX512-BF16), where bf16 is emulated and slow", None


def reduced_dtype(device_type: str, precision: str, *, bf16_safe: bool = True, gpu_bf16: bool = True) -> torch.dtype:
    """The reduced precision of the torch backend: bf16 on the CPU; on CUDA (AMP) bf16 where the GPU supports
    it and the model is not bf16-unsafe, else fp16 (3 more mantissa bits), unless bf16 was asked for."""
    if device_type != "cuda" or precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if (bf16_safe and gpu_bf16) else torch.float16


# -- training ------------------------------------------------------------------------------------
def autocast_for(device: torch.device, *, enabled: bool = True):
    """Mixed precision where it is safe and fast: fp16/bf16 autocast on CUDA, none elsewhere."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def training_autocast_dtype(device: torch.device, precision: str = "auto", model: torch.nn.Module | None = None, *,
                            cpu: CpuFeatures | None = None) -> torch.dtype | None:
    """The autocast dtype for fine-tuning, or None for plain fp32.

    ``auto``: bf16 on CUDA devices that support it (fp16 otherwise, with a grad scaler). On a CPU
    with native bf16 (``cpu``, default this machine's), bf16 unless ``model`` trains most of its
    depthwise convolutions, whose bf16 backward pass is slower there than fp32 (EfficientNet-Lite0
    full fine-tuning 12-14 images/s in bf16 against 14-16 in fp32; ResNet-18 ~2.2x faster in bf16).
    Elsewhere fp32. Weights, optimizer state and the loss stay in fp32 (mixed precision).
    """
    return training_autocast_choice(device, precision, model, cpu=cpu)[0]


def training_autocast_choice(device: torch.device, precision: str = "auto", model: torch.nn.Module | None = None, *,
                             cpu: CpuFeatures | None = None) -> tuple[torch.dtype | None, str]:
    """:func:`training_autocast_dtype` and why."""
    if precision == "fp32":
        return None, "fp32 was asked for"
    if device.type == "cuda":
        if precision == "bf16" or torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bf16 autocast on CUDA"
        return torch.float16, "fp16 autocast with a grad scaler: this GPU has no bf16"
    if device.type == "cpu" and precision == "bf16":
        return torch.bfloat16, "bf16 was asked for"
    if device.type != "cpu":
        return None, f"fp32 on {device.type}"
    cpu = CpuFeatures.from_system() if cpu is None else cpu
    if not cpu.has_native_bf16:
        return None, "fp32: the CPU has no native bf16 (no AMX/AVX512-BF16)"
    if model is not None and trains_depthwise(model):
        return None, "fp32: the model trains most of its depthwise convolutions, slower in bf16"
    return torch.bfloat16, "bf16 autocast: the CPU computes bf16 natively (AMX/AVX512-BF16)"


def trains_depthwise(model: torch.nn.Module, share: float = 0.5) -> bool:
    """Whether more than ``share`` of the model's depthwise convolutions have trainable weights."""
    depthwise = [m for m in model.modules()
                 if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]
    if not depthwise:
        return False
    trainable = sum(1 for m in depthwise if m.weight.requires_grad)
    return trainable > share * len(depthwise)
