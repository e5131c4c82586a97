"""The network's input size for a training run: the weights' own, or smaller for small images (``input_size="auto"``).

Upsampling a 64-px tile to 224 px costs (224/64)² = 12× the pixels of every forward and backward
pass, for detail the image never had. ``auto`` measures the training images' sides (headers only)
and trains small images at a smaller size; the choice is recorded in the run and saved with the
model's preprocessing, so prediction, embedding and export use the same size.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch

from ..backbones import Preprocessing
from ..data.folders import ImageSet

#: Images are "small" when their median shorter side is at most this share of the weights' input size.
SMALL_SHARE = 0.5
#: A small image is trained at this multiple of its median shorter side (then rounded up to a multiple of 32)...
UPSCALE = 2.0
#: ...and never below this size (mnist features: 0.947 val at 224, 0.932 at 128, lower below; BENCHMARKS.md).
MIN_SIZE = 128
#: Images whose headers are read to measure the sides.
SAMPLE = 64


def measure_sides(images: ImageSet, sample: int = SAMPLE) -> dict[str, Any]:
    """The median shorter side (and longer side) of up to ``sample`` training images, spread evenly; unreadable headers
    are left out. ``{"median_short_side", "median_long_side", "measured"}``."""
    from PIL import Image

    n = len(images)
    k = min(sample, n)
    picks = [i * n // k for i in range(k)]
    shorts, longs = [], []
    for i in picks:
        try:
            with Image.open(images.paths[i]) as im:
                w, h = im.size
        except Exception:  # an unreadable file is skipped (and reported) by the loaders, not here
            continue
        shorts.append(min(w, h))
        longs.append(max(w, h))
    if not shorts:
        return {"median_short_side": None, "median_long_side": None, "measured": 0}
    return {"median_short_side": float(statistics.median(shorts)), "median_long_side": float(statistics.median(longs)),
            "measured": len(shorts)}


def auto_size(short_side: float | None, weights_size: int) -> int:
    """The input size ``auto`` picks for images of median shorter side ``short_side`` and weights trained at ``weights_size``."""
    if short_side is None or short_side > SMALL_SHARE * weights_size:
        return weights_size
    return min(weights_size, max(MIN_SIZE, 32 * math.ceil(UPSCALE * short_side / 32)))


def choose_input_size(setting: int | str, backbone, images: ImageSet,
                      previous: dict[str, Any] | None = None) -> tuple[Preprocessing, dict[str, Any]]:
    """The preprocessing to train ``backbone`` at, and the record of the choice (``config`` setting, size, reason).

    ``setting``: ``"auto"`` or an int. A size the backbone cannot take (a model with a fixed input size) falls
    back to the weights' size, and the record says so. ``previous``: a resumed run's record, kept as it is.
    """
    pre: Preprocessing = backbone.preprocessing
    if previous:
        return pre.at_size(int(previous["size"])), previous
    weights_size = pre.input_size
    record: dict[str, Any] = {"setting": setting, "weights_size": weights_size}
    if setting == "auto":
        sides = measure_sides(images)
        size = auto_size(sides["median_short_side"], weights_size)
        record.update(sides)
        side = sides["median_short_side"]
        record["reason"] = (f"median image side {side:g} px is at most {SMALL_SHARE:g} of the weights' {weights_size} px: "
                            f"trained at {size} px ({UPSCALE:g}x the side, at least {MIN_SIZE})" if size != weights_size
                            else f"the weights' {weights_size} px (median image side "
                                 f"{'unknown' if side is None else f'{side:g} px'})")
    else:
        size = int(setting)
        record["reason"] = f"set to {size} px"
    if size != weights_size and not _accepts(backbone, size):
        record["reason"] = f"{size} px does not fit this model's fixed input size: trained at the weights' {weights_size} px"
        size = weights_size
    record["size"] = size
    return pre.at_size(size), record


def input_note(record: dict[str, Any]) -> str:
    """``input N px``, and why when it is not the weights' size."""
    size = record["size"]
    return f"input {size} px" + (f" ({record['reason']})" if size != record["weights_size"] else "")


def _accepts(backbone, size: int) -> bool:
    """Whether the backbone runs on ``size`` × ``size`` images (some, e.g. ViTs, check for their own size)."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            backbone(torch.zeros(1, 3, size, size))
        return True
    except Exception:  # the model rejects the shape: any exception type, by design of the model
        return False
    finally:
        backbone.train(was_training)
