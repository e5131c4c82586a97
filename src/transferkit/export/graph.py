"""The PyTorch side of an export: the module to trace, whether its input size may stay dynamic, the ONNX file and
what the exporter warned about.

The graph is traced by PyTorch's TorchScript exporter, as the OpenVINO conversion of
:mod:`transferkit.inference.openvino_backend` does (one call site: :func:`export_onnx`). Tracing
records Python numbers as constants, so a layer that computes its padding from the input size
(TensorFlow's "same" padding: ``Conv2dSame``, ``MaxPool2dSame``) is only right at the traced size:
such a model is exported for a fixed size, and the caller says so.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn


class ClassifierOutputs(nn.Module):
    """A classifier as exported: ``images -> (logits, probabilities)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)


def size_dependent_layers(module: nn.Module) -> list[str]:
    """Class names of the layers whose padding is computed from the input size (TensorFlow "same" padding)."""
    return sorted({type(m).__name__ for m in module.modules() if type(m).__name__.endswith("Same")})


def export_onnx_file(module: nn.Module, path: str | os.PathLike, input_size: int, *, outputs: tuple[str, ...],
                     dynamic_size: bool) -> list[dict[str, Any]]:
    """Write ``module`` as ONNX with a dynamic batch axis (and height and width when ``dynamic_size``).

    Returns:
        the exporter's warnings, grouped (see :func:`summarize_warnings`).
    """
    from ..inference.openvino_backend import export_onnx

    axes: dict[str, dict[int, str]] = {"images": {0: "batch", **({2: "height", 3: "width"} if dynamic_size else {})}}
    axes.update({name: {0: "batch"} for name in outputs})
    return summarize_warnings(export_onnx(module, path, input_size, output_names=outputs, dynamic_axes=axes))


def summarize_warnings(caught: list[warnings.WarningMessage]) -> list[dict[str, Any]]:
    """Warnings grouped by category and first sentence: ``{"category", "message", "count", "where"}``, in order seen."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for w in caught:
        text = " ".join(str(w.message).split())
        first = text.split(". ")[0].rstrip(".")[:240] + "."
        key = (w.category.__name__, first)
        group = groups.setdefault(key, {"category": key[0], "message": first, "count": 0, "where": []})
        group["count"] += 1
        where = f"{_short(w.filename)}:{w.lineno}"
        if where not in group["where"]:
            group["where"].append(where)
    return list(groups.values())


def describe_warning(w: dict[str, Any]) -> str:
    """One line for a grouped warning."""
    count = f" x{w['count']}" if w["count"] > 1 else ""
    return f"torch.onnx export: {w['category']}{count} at {', '.join(w['where'][:3])}: {w['message']}"


def _short(filename: str) -> str:
    """A warning's file, from its package on (``transferkit/backbones/_native.py``, ``torch/onnx/utils.py``)."""
    parts = Path(filename).parts
    for anchor in ("site-packages", "src"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1:])
    return Path(filename).name
