"""The pixel-level signal that confirms near-duplicate candidates: tiny greyscale thumbnails, compared by correlation.

Embedding cosine alone cannot separate a half-size or JPEG-30 copy (cosine 0.90-0.93 with
efficientnet_lite0) from another photo of the same kind of object, so candidate pairs are
confirmed here. A :class:`PixelSignature` is the image in greyscale at 24 x 24 and at 27 x 27
(the whole picture, aspect ignored). Two images score the best normalised cross-correlation
over: the 24 x 24 thumbnails as they are and one of them mirrored (flips), and every
24 x 24 window of one's 27 x 27 thumbnail against the other's 24 x 24 one (a crop of up to
~11% at any offset, both ways, mirrored too). Normalising each thumbnail to zero mean and unit
norm makes the score blind to brightness and contrast shifts; greyscale to saturation. The
thresholds were measured on injected copies (benchmarks/eval_duplicates.py, BENCHMARKS.md).

Signatures are computed lazily, for candidate images only (a decode at draft size each: 4.5 ms
for flowers12's 224 px JPEGs on the shared 2-core machine), so stores of any age work and no
extra column is needed. At millions of candidate images that is one decode per image again:
storing the signature while embedding is the way to go there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

#: Side of the compared thumbnail, and of the larger one whose windows model a crop.
SMALL, LARGE = 24, 27


@dataclass
class PixelSignature:
    """An image's greyscale thumbnails: ``small`` (24 x 24) and ``large`` (27 x 27), uint8."""

    small: np.ndarray
    large: np.ndarray


def pixel_signature(path: str | os.PathLike) -> PixelSignature | None:
    """The signature of the image at ``path``, or None where it cannot be read (moved, damaged, not an image)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("RGB", (4 * LARGE, 4 * LARGE))  # JPEGs decode at a reduced scale: the thumbnail needs little
            im = ImageOps.exif_transpose(im).convert("L")
            # BOX averages every source pixel: the thumbnail of a re-encoded or resized copy matches the original's
            small = np.asarray(im.resize((SMALL, SMALL), Image.Resampling.BOX), dtype=np.uint8)
            large = np.asarray(im.resize((2 * LARGE, 2 * LARGE), Image.Resampling.BOX), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    return PixelSignature(small, large)


def _unit(x: np.ndarray) -> np.ndarray:
    # zero mean, unit norm per row: correlation becomes a dot product; flat images stay zero (score 0)
    x = x.reshape(len(x), -1).astype(np.float32)
    x -= x.mean(1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 1e-6, norm, np.inf)


def _windows(large: np.ndarray) -> np.ndarray:
    # windows at half-pixel steps (the large thumbnail is at twice the resolution), each averaged down 2 x 2
    shift, side = 2 * (LARGE - SMALL), 2 * SMALL
    wins = np.stack([large[y:y + side, x:x + side] for y in range(shift + 1) for x in range(shift + 1)]).astype(np.float32)
    return wins.reshape(len(wins), SMALL, 2, SMALL, 2).mean((2, 4))


class _Prepared:
    """A signature as the unit vectors the comparison needs (kept per image while a search runs)."""

    def __init__(self, sig: PixelSignature):
        self.small = _unit(np.stack([sig.small, sig.small[:, ::-1]]))  # (2, 576): as is, mirrored
        self.windows = _unit(_windows(sig.large))  # (16, 576)


def pixel_similarity(a: PixelSignature | _Prepared, b: PixelSignature | _Prepared) -> float:
    """The best thumbnail correlation of two images over mirroring and small crops, in [-1, 1]."""
    a = a if isinstance(a, _Prepared) else _Prepared(a)
    b = b if isinstance(b, _Prepared) else _Prepared(b)
    whole = float((b.small @ a.small[0]).max())  # as is, or b mirrored
    crop_b = float((a.windows @ b.small.T).max())  # b is a crop of a (or of a mirrored)
    crop_a = float((b.windows @ a.small.T).max())
    return max(whole, crop_b, crop_a)


class PixelChecker:
    """Pixel similarity of row pairs, each row's signature read once from its path and kept.

    Args:
        paths: one file path per row.

    Attributes:
        num_read, num_unreadable: signatures computed, and rows whose file could not be read.
    """

    def __init__(self, paths: list[str]):
        self.paths = paths
        self._cache: dict[int, _Prepared | None] = {}
        self.num_read = 0
        self.num_unreadable = 0

    def prefetch(self, rows) -> None:
        """Read the signatures of ``rows`` now, on one thread per core (PIL releases the GIL while decoding)."""
        from concurrent.futures import ThreadPoolExecutor

        from ..data.datasets import decode_threads

        todo = sorted({int(i) for i in rows} - set(self._cache))
        if len(todo) < 16:
            return
        with ThreadPoolExecutor(decode_threads()) as pool:
            sigs = pool.map(lambda i: pixel_signature(self.paths[i]) if self.paths[i] else None, todo)
            for i, sig in zip(todo, sigs):
                self._cache[i] = _Prepared(sig) if sig is not None else None
                self.num_read += 1
                self.num_unreadable += sig is None

    def _get(self, i: int) -> _Prepared | None:
        if i not in self._cache:
            sig = pixel_signature(self.paths[i]) if self.paths[i] else None
            self._cache[i] = _Prepared(sig) if sig is not None else None
            self.num_read += 1
            self.num_unreadable += sig is None
        return self._cache[i]

    def similarity(self, i: int, j: int) -> float | None:
        """The pixel similarity of rows ``i`` and ``j``; None when either file cannot be read."""
        a, b = self._get(i), self._get(j)
        if a is None or b is None:
            return None
        return pixel_similarity(a, b)
