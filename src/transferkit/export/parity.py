"""The parity check of an export: the file, run by each runtime, against eager PyTorch on real photos.

The photos are the bundled sample's (ants and bees, ``sample_data/hymenoptera_mini``), prepared
with the weights' own evaluation transform, at batch 1, 3 and 8 (a batch axis that tracing baked
in fails at 3 or 8). Every output row must keep cosine similarity >= :data:`MIN_COSINE` to
PyTorch's, the bar OpenVINO conversions are held to (``inference.fidelity.CONVERSION_MIN_COSINE``).
"""

from __future__ import annotations

import math
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backbones import Preprocessing
from ..inference.fidelity import CONVERSION_MIN_COSINE, worst_cosine
from .runtime import Session

#: The batch sizes the exported graph is run at.
PARITY_BATCHES = (1, 3, 8)
#: Every output's cosine similarity to PyTorch's must reach this.
MIN_COSINE = CONVERSION_MIN_COSINE
#: A dynamic input size is also checked at the input size plus this (a multiple of every stride).
OTHER_SIZE_STEP = 32


def sample_images(count: int = max(PARITY_BATCHES)) -> list[Path]:
    """``count`` photos of the bundled sample, ants and bees alternating (sorted, so always the same ones)."""
    root = Path(str(files("transferkit") / "sample_data" / "hymenoptera_mini" / "train"))
    per_class = [sorted(p for p in (root / c).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")) for c in ("ants", "bees")]
    mixed = [p for pair in zip(*per_class) for p in pair]
    return mixed[:count]


def sample_batch(pre: Preprocessing, count: int = max(PARITY_BATCHES)) -> torch.Tensor:
    """The sample photos as a normalised float32 ``(count, 3, S, S)`` batch (the weights' evaluation transform)."""
    from ..data.decode import load_image

    transform = pre.eval_transform()
    return torch.stack([transform(load_image(p)) for p in sample_images(count)])


def reference(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eager fp32 PyTorch's first output, ``(B, D)``."""
    with torch.inference_mode():
        y = module(x.contiguous())
    y = y[0] if isinstance(y, tuple) else y
    return y.float().reshape(len(x), -1)


def compare(out: np.ndarray, ref: torch.Tensor) -> dict[str, float]:
    """``max_abs_diff`` and ``min_cosine`` of ``out`` against ``ref`` (rows matched)."""
    out_t = torch.from_numpy(np.asarray(out, dtype=np.float32)).reshape(len(ref), -1)
    return {"max_abs_diff": float((out_t - ref).abs().max()), "min_cosine": worst_cosine(out_t, ref)}


def check_parity(module: nn.Module, path: str | os.PathLike, pre: Preprocessing, *, runtimes: list[str],
                 batches: tuple[int, ...] = PARITY_BATCHES, size: int | None = None) -> list[dict[str, Any]]:
    """The exported file at ``path`` against ``module`` on the sample photos, per runtime and batch size.

    Args:
        module: the eager module that was exported (eval mode, CPU).
        pre: its preprocessing; ``size`` (default ``pre.input_size``) is the input size to check at.

    Returns:
        ``{"runtime", "batch", "input_size", "max_abs_diff", "min_cosine", "ok"}`` per check; a runtime that
        cannot run the file at a batch size gives ``"error"`` and ``ok`` False.
    """
    size = size or pre.input_size
    x = sample_batch(pre.at_size(size), max(batches))
    refs = {b: reference(module, x[:b]) for b in batches}
    results = []
    for runtime in runtimes:
        try:
            session = Session(runtime, path)
        except Exception as exc:  # noqa: BLE001 - a file the runtime rejects fails its check, with the reason
            results.append(_error(runtime, batches[0], size, exc))
            continue
        for b in batches:
            try:
                numbers = compare(session.run(x[:b].numpy()), refs[b])
            except Exception as exc:  # noqa: BLE001 - e.g. a batch axis the trace fixed
                results.append(_error(runtime, b, size, exc))
                continue
            ok = numbers["min_cosine"] >= MIN_COSINE and math.isfinite(numbers["max_abs_diff"])
            results.append({"runtime": runtime, "batch": b, "input_size": size, **numbers, "ok": ok})
    return results


def _error(runtime: str, batch: int, size: int, exc: BaseException) -> dict[str, Any]:
    lines = str(exc).strip().splitlines()
    return {"runtime": runtime, "batch": batch, "input_size": size, "max_abs_diff": math.nan, "min_cosine": math.nan,
            "ok": False, "error": (lines[0] if lines else type(exc).__name__)[:200]}


def describe(check: dict[str, Any]) -> str:
    """One line per check: ``onnxruntime  batch 3  224px: max |diff| 2.1e-06  min cosine 1.000000``."""
    head = f"{check['runtime']:<11}  batch {check['batch']}  {check['input_size']}px"
    if check.get("error"):
        return f"{head}: failed to run: {check['error']}"
    return f"{head}: max |diff| {check['max_abs_diff']:.2e}  min cosine {check['min_cosine']:.6f}"
