"""The pixel-level signal that confirms near-duplicate candidates: tiny greyscale thumbnails, compared by correlation.

Embedding cosine alone cannot separate a half-size or JPEG-30 copy (cosine 0.90-0.93 with
efficientnet_lite0) from another photo of the same kind of object, so candidate pairs are
confirmed here. A :class:`PixelSignature` is the image in greyscale at 32 x 32 and at 36 x 36
(the whole picture, aspect ignored). Two images score the best normalised cross-correlation
over: the 32 x 32 thumbnails as they are and one of them mirrored (flips), and every
32 x 32 window of one's 36 x 36 thumbnail against the other's 32 x 32 one (a crop of up to
~11% at any offset, both ways, mirrored too). 32 px rather than 24 tells handwritten digits
apart (pair precision on mnist at threshold 0.92: 0.815 -> 0.965) and costs the photos nothing
(BENCHMARKS.md). Normalising each thumbnail to zero mean and unit norm makes the score blind
to brightness and contrast shifts; greyscale to saturation. The thresholds were measured on injected copies (benchmarks/eval_duplicates.py, BENCHMARKS.md).

Signatures are computed lazily, for candidate images only (a decode at draft size each: 4.5 ms
for flowers12's 224 px JPEGs on the shared 2-core machine), so stores of any age work and no
extra column is needed. At millions of candidate images that is one decode per image again:
storing the signature while embedding is the way to go there.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

#: Side of the compared thumbnail, and of the larger one whose windows model a crop.
SMALL, LARGE = 32, 36
#: Rows whose prepared vectors a :class:`PixelChecker` keeps (2048 x 332 KB = 0.7 GB at most).
PREPARED_ROWS = 2048


@dataclass
class PixelSignature:
    """An image's greyscale thumbnails: ``small`` (32 x 32) and ``large`` (36 x 36 at twice the resolution), uint8."""

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
        self.small = _unit(np.stack([sig.small, sig.small[:, ::-1]]))  # (2, 1024): as is, mirrored
        self.windows = _unit(_windows(sig.large))  # (81, 1024): 332 KB, so only recent rows keep theirs


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

    The uint8 thumbnails of every row read are kept (6 KB a row); their prepared unit vectors
    (332 KB) only for the :data:`PREPARED_ROWS` most recently compared rows, so memory stays bounded
    however many candidates a store has. Candidate pairs come sorted by their first row, so most
    comparisons find both rows prepared.

    Args:
        paths: one file path per row.

    Attributes:
        num_read, num_unreadable: signatures computed, and rows whose file could not be read.
    """

    def __init__(self, paths: list[str]):
        self.paths = paths
        self._sigs: dict[int, PixelSignature | None] = {}
        self._prepared: OrderedDict[int, _Prepared] = OrderedDict()
        self.num_read = 0
        self.num_unreadable = 0

    def _read(self, i: int, sig: PixelSignature | None) -> None:
        self._sigs[i] = sig
        self.num_read += 1
        self.num_unreadable += sig is None

    def prefetch(self, rows) -> None:
        """Read the signatures of ``rows`` now, on one thread per core (PIL releases the GIL while decoding)."""
        from concurrent.futures import ThreadPoolExecutor

        from ..data.datasets import decode_threads

        todo = sorted({int(i) for i in rows} - set(self._sigs))
        if len(todo) < 16:
            return
        with ThreadPoolExecutor(decode_threads()) as pool:
            for i, sig in zip(todo, pool.map(lambda i: pixel_signature(self.paths[i]) if self.paths[i] else None, todo)):
                self._read(i, sig)

    def _get(self, i: int) -> _Prepared | None:
        if i in self._prepared:
            self._prepared.move_to_end(i)
            return self._prepared[i]
        if i not in self._sigs:
            self._read(i, pixel_signature(self.paths[i]) if self.paths[i] else None)
        sig = self._sigs[i]
        if sig is None:
            return None
        prepared = self._prepared[i] = _Prepared(sig)
        if len(self._prepared) > PREPARED_ROWS:
            self._prepared.popitem(last=False)
        return prepared

    def similarity(self, i: int, j: int) -> float | None:
        """The pixel similarity of rows ``i`` and ``j``; None when either file cannot be read."""
        a, b = self._get(i), self._get(j)
        if a is None or b is None:
            return None
        return pixel_similarity(a, b)
