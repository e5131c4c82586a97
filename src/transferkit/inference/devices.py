"""The torch device: one default for every step (CUDA, then MPS, then the CPU)."""

from __future__ import annotations

import torch

from ..errors import ConfigError


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, then MPS, else CPU.

    Raises:
        ConfigError: an unknown device, or one that is not available.
    """
    d = str(device).lower()
    if d == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"`device` {device!r}: CUDA is not available on this machine; choose cpu or auto.")
        return torch.device(d)
    if d == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ConfigError("`device` 'mps': MPS is not available on this machine; choose cpu or auto.")
        return torch.device("mps")
    if d == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"Unknown device {device!r}. Choose from: auto, cpu, cuda, mps.")
