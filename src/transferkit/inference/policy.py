"""Precision decisions for training (autocast dtype) and inference."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def autocast_for(device: torch.device, *, enabled: bool = True):
    """Mixed precision where it is safe and fast: fp16/bf16 autocast on CUDA, none elsewhere."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def training_autocast_dtype(device: torch.device, precision: str = "auto", model: torch.nn.Module | None = None) -> torch.dtype | None:
    """The autocast dtype for fine-tuning, or None for plain fp32.

    ``auto``: bf16 on CUDA devices that support it (fp16 otherwise, with a grad scaler). On
    CPUs with native bf16 (AVX512-BF16/AMX), bf16 unless ``model`` trains most of its
    depthwise convolutions, whose bf16 backward pass is slow there. Measured on 2 Sapphire
    Rapids cores: ResNet-18 full and partial ~2.2x with bf16 (one-step microbenchmark);
    EfficientNet-Lite0 training-phase images/s (`transferkit train`, 2 epochs) partial 64-66
    with bf16 against 31-41 in fp32, but full 11.9-14.0 with bf16 against 13.6-16.0 in fp32
    (channels-last). Elsewhere fp32. Weights, optimizer state and the
    loss stay in fp32 (mixed precision).
    """
    from .runner import cpu_has_bf16

    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if (precision == "bf16" or torch.cuda.is_bf16_supported()) else torch.float16
    if device.type == "cpu" and precision == "bf16":
        return torch.bfloat16
    if device.type == "cpu" and cpu_has_bf16():
        return None if model is not None and trains_depthwise(model) else torch.bfloat16
    return None


def trains_depthwise(model: torch.nn.Module, share: float = 0.5) -> bool:
    """Whether more than ``share`` of the model's depthwise convolutions have trainable weights."""
    depthwise = [m for m in model.modules()
                 if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]
    if not depthwise:
        return False
    trainable = sum(1 for m in depthwise if m.weight.requires_grad)
    return trainable > share * len(depthwise)
