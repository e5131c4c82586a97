"""The one dataset over image files, its collate function, and threaded prefetching.

An unreadable file never stops a run: the dataset returns its reason instead of an image,
and :func:`collate` stacks the readable items and lists the others.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._hashing import bytes_digest
from ..config import DEFAULT_MAX_PIXELS
from .decode import UnreadableImageError, decode_jpeg_rgbx, load_image, oriented_size

#: An item: ``(image | None, extra, index, reason | None)``; ``extra`` is the label, or the file record.
Item = tuple[Any, Any, int, "str | None"]


class ImageFiles:
    """A torch-style dataset that decodes image files through ``transform``.

    Args:
        paths: the files.
        transform: PIL image (or, with ``fast_jpeg``, uint8 RGBX array) -> the model's input
            (a float tensor for training, a uint8 HWC array for frozen features and embeddings).
        labels: per file, returned as the item's ``extra`` (training).
        max_pixels: refuse images with more pixels (see :func:`~transferkit.data.decode.load_image`).
        draft_size: the short side images are resized to (large JPEGs decode at a reduced scale).
        keep_gray: hand greyscale images to ``transform`` in one channel.
        file_record: read each file once, and return as ``extra`` its ``fingerprint`` (digest of
            the bytes), ``size``, ``mtime`` (ns) and oriented ``width`` and ``height`` (the store's columns).
        fast_jpeg: decode plain JPEGs with :func:`~transferkit.data.decode.decode_jpeg_rgbx`
            (needs ``file_record``; ``transform`` must take arrays).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], transform: Callable, *, labels: Sequence[int] | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, draft_size: int | None = None, keep_gray: bool = False,
                 file_record: bool = False, fast_jpeg: bool = False):
        self.paths = [Path(p) for p in paths]
        self.transform = transform
        self.labels = list(labels) if labels is not None else None
        self.max_pixels = max_pixels
        self.draft_size = draft_size
        self.keep_gray = keep_gray
        self.file_record = file_record
        self.fast_jpeg = fast_jpeg and file_record

    @classmethod
    def from_set(cls, images, transform: Callable, **kwargs) -> ImageFiles:
        """Over an :class:`~transferkit.data.folders.ImageSet`, its labels as extras."""
        return cls(images.paths, transform, labels=images.labels, **kwargs)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Item:
        path = self.paths[i]
        extra = self.labels[i] if self.labels is not None else None
        try:
            if self.file_record:
                return self._read_record(path, i)
            im = load_image(path, max_pixels=self.max_pixels, draft_size=self.draft_size, keep_gray=self.keep_gray)
            return self.transform(im), extra, i, None
        except UnreadableImageError as exc:
            return None, extra, i, str(exc) or "not an image"
        except Exception as exc:  # noqa: BLE001 - e.g. a transform failing on a degenerate image
            return None, extra, i, f"{type(exc).__name__}: {exc}"[:200]

    def _read_record(self, path: Path, i: int) -> Item:
        try:
            st = path.stat()
            data = path.read_bytes()
        except OSError as exc:
            return None, None, i, f"cannot read file ({exc.strerror or exc})"
        record = {"fingerprint": bytes_digest(data), "size": st.st_size, "mtime": st.st_mtime_ns}
        try:
            im = decode_jpeg_rgbx(data, max_pixels=self.max_pixels, draft_size=self.draft_size) if self.fast_jpeg else None
            if im is not None:  # a plain JPEG, upright: its size is the array's
                record["width"], record["height"] = im.shape[1], im.shape[0]
            else:
                # decoded first: load_image applies the pixel limit before PIL allocates anything
                im = load_image(io.BytesIO(data), max_pixels=self.max_pixels, draft_size=self.draft_size,
                                keep_gray=self.keep_gray)
                record["width"], record["height"] = oriented_size(data)
            return self.transform(im), record, i, None
        except UnreadableImageError as exc:
            reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", path.name, str(exc))
            return None, None, i, reason or "not an image"


def collate(batch: Sequence[Item], *, tensors: bool = False):
    """Stack the readable items; return ``(x, extras, indices, bad)`` with ``bad = [(index, reason)]``.

    ``x`` is ``None`` when no item was readable. Float tensors are stacked as they are. uint8
    HWC arrays become a ``(B, H, W, C)`` view of planar (``B, C, H, W`` C-contiguous) memory: the
    layout the OpenVINO graph takes without a copy and the one PyTorch's resize kernel produces,
    so stacking is one copy per plane (the byte-strided copy ``np.stack`` leaves for later cost
    14 ms per 64 images on the thread that feeds the model).

    Args:
        tensors: extras (labels) and indices as ``torch.long`` tensors, for a training loader.
    """
    good = [b for b in batch if b[0] is not None]
    bad = [(b[2], b[3]) for b in batch if b[0] is None]
    if not good:
        return (None, None, None, bad) if tensors else (None, [], [], bad)
    extras, indices = [b[1] for b in good], [b[2] for b in good]
    first = good[0][0]
    if hasattr(first, "dim"):  # a torch tensor
        import torch

        x = torch.stack([b[0] for b in good])
    else:
        import numpy as np

        h, w, c = first.shape
        planar = np.empty((len(good), c, h, w), dtype=first.dtype)
        for k, b in enumerate(good):
            planar[k] = b[0].transpose(2, 0, 1)
        x = planar.transpose(0, 2, 3, 1)
    if tensors:
        import torch

        return x, torch.tensor(extras, dtype=torch.long), torch.tensor(indices, dtype=torch.long), bad
    return x, extras, indices, bad


def collate_tensors(batch: Sequence[Item]):
    """:func:`collate` with ``tensors=True`` (a module-level function, so worker processes can unpickle it)."""
    return collate(batch, tensors=True)


def default_num_workers() -> int:
    """Data-loading workers: one per core beyond the first, capped at 8."""
    n = os.cpu_count() or 1
    return max(0, min(8, n - 1)) if n > 1 else 0


def decode_threads() -> int:
    """Decoding threads for embedding: one per core (capped at 8).

    Threads, not processes, so they share the cores with the model: PIL releases the GIL
    while decoding and resizing (on 2 cores, EfficientNet-Lite0 ran at 65 img/s with 1
    thread, 97 with 2, 82 with 3).
    """
    return max(1, min(8, os.cpu_count() or 1))


#: How many decoded images may wait for the model (~75 MB at 224 px): enough to keep the
#: decoders busy while the model is converted and compiled on the first batch.
PREFETCH_IMAGES = 512


def prefetch_batches(dataset, batch_size: int, workers: int):
    """Collated batches (see :func:`collate`) in order, decoded by ``workers`` threads, up to
    :data:`PREFETCH_IMAGES` ahead (at least ``2 * workers`` batches)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    starts = range(0, len(dataset), batch_size)

    def load(start: int):
        return collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])

    if workers <= 0:
        for start in starts:
            yield load(start)
        return
    ahead = max(2 * workers, -(-PREFETCH_IMAGES // batch_size))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="transferkit-decode") as pool:
        pending: deque = deque()
        it = iter(starts)
        for start in it:
            pending.append(pool.submit(load, start))
            if len(pending) >= ahead:
                break
        while pending:
            batch = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            yield batch
