"""The edited copies injected as known near duplicates (shared by the slow test and benchmarks/eval_duplicates.py)."""

from __future__ import annotations

import random
from pathlib import Path

#: Every edit; the issue's goal is measured on ``TARGET_EDITS`` (``combined`` stacks three edits and is reported apart).
EDITS = ("resize50", "jpeg30", "crop10", "hflip", "colour", "combined")
TARGET_EDITS = ("resize50", "jpeg30", "crop10", "hflip", "colour")


def make_copy(src: Path, dest: Path, edit: str, *, seed: int = 0) -> Path:
    """Write an edited copy of the image ``src`` to ``dest`` (JPEG; quality 90 unless the edit says otherwise)."""
    from PIL import Image, ImageEnhance, ImageOps

    rng = random.Random(seed)
    with Image.open(src) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
    w, h = im.size
    quality = 90
    if edit == "resize50":
        im = im.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.LANCZOS)
    elif edit == "jpeg30":
        quality = 30
    elif edit == "crop10":
        im = _crop(im, 0.9, rng)
    elif edit == "hflip":
        im = ImageOps.mirror(im)
    elif edit == "colour":
        im = ImageEnhance.Color(im).enhance(1.2)
        im = ImageEnhance.Brightness(im).enhance(1.08)
        im = ImageEnhance.Contrast(im).enhance(0.95)
    elif edit == "combined":
        im = _crop(im.resize((max(1, w * 3 // 4), max(1, h * 3 // 4)), Image.Resampling.BILINEAR), 0.95, rng)
        quality = 50
    else:
        raise ValueError(f"unknown edit {edit!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    im.save(dest, format="JPEG", quality=quality)
    return dest


def _crop(im, keep: float, rng: random.Random):
    w, h = im.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return im.crop((x0, y0, x0 + cw, y0 + ch))
