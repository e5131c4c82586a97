"""Image folders, splits, robust image loading and datasets."""

from __future__ import annotations

import functools
import io
import logging
import os
import random
import re
import warnings
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, DataNotFoundError

log = logging.getLogger("transferkit")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Default limit on decoded pixels; larger images are skipped as possible decompression bombs.
DEFAULT_MAX_PIXELS = 100_000_000
#: Environment variable that overrides :data:`DEFAULT_MAX_PIXELS` (a positive integer, or 0 for no limit).
MAX_PIXELS_ENV = "TRANSFERKIT_MAX_PIXELS"
_FROM_ENV = -1  # sentinel default: resolve with max_pixels_limit()
#: How much larger than the requested size a drafted JPEG stays (see :func:`load_image`).
DRAFT_HEADROOM = 4
_OS_CLUTTER = {".ds_store", "thumbs.db", "desktop.ini"}
_TRAIN_NAMES = ("train", "training")
_VAL_NAMES = ("val", "valid", "validation")
_TEST_NAMES = ("test", "testing")


class UnreadableImageError(Exception):
    """An image file that cannot be decoded (internal; callers skip the file)."""


def max_pixels_limit() -> int | None:
    """The decoded-pixel limit: ``$TRANSFERKIT_MAX_PIXELS`` if set (``0`` = no limit), else :data:`DEFAULT_MAX_PIXELS`.

    Raises:
        ConfigError: the variable is not a non-negative integer.
    """
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        from ..errors import ConfigError

        raise ConfigError(f"{MAX_PIXELS_ENV} must be a non-negative integer (0 = no limit); got {os.environ[MAX_PIXELS_ENV]!r}.")
    return value or None


def _resolve_max_pixels(max_pixels: int | None) -> int | None:
    return max_pixels_limit() if max_pixels == _FROM_ENV else max_pixels


def _bomb_reason(size: tuple[int, int] | None, limit: int | None, exc: BaseException | None = None) -> str:
    if size is None and exc is not None:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        what = f"{int(m.group(1)):,} pixels" if m else "the image"
    else:
        what = f"{size[0]}x{size[1]} pixels" if size else "the image"
    lim = f"{limit:,}" if limit else "PIL's default"
    return f"{what} exceeds the limit of {lim} (possible decompression bomb; raise {MAX_PIXELS_ENV} to allow it)"


@contextmanager
def _pil_pixel_limit(limit: int | None):
    """Make PIL's own bomb check agree with ``limit`` (PIL warns above it and refuses above twice it).

    Both settings are process-wide: every caller in transferkit sets the same value, so
    threads agree; and PIL's warning (for images transferkit refuses itself, with a clearer
    message) is filtered once, because ``warnings.catch_warnings`` is not thread-safe: in a
    decoding thread it restores the filters that other threads saw on entry, undoing theirs.
    """
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = limit
    _filter_bomb_warning()
    yield


@functools.cache
def _filter_bomb_warning() -> None:
    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def is_image_file(path: Path) -> bool:
    """Whether ``path`` looks like an image by name (hidden files and OS clutter excluded)."""
    name = path.name
    if name.startswith(".") or name.lower() in _OS_CLUTTER:
        return False
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(root: Path) -> list[Path]:
    """All image files under ``root`` (recursively, sorted, symlink loops ignored)."""
    out: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # symlink loop
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            p = Path(dirpath) / fname
            # a dangling or looping symlink is kept, so it is reported as unreadable rather than vanishing
            if is_image_file(p) and (p.is_file() or p.is_symlink()):
                out.append(p)
    return out


def load_image(path: str | os.PathLike, *, max_pixels: int | None = _FROM_ENV, draft_size: int | None = None,
               keep_gray: bool = False):
    """Open an image as RGB with EXIF orientation applied.

    Any mode (1, L, LA, P, RGBA, CMYK, I;16, I, F) is converted to RGB; transparency is
    composited on white. ``draft_size`` lets a large JPEG decode at a reduced scale that
    still covers ``DRAFT_HEADROOM`` times that many pixels on the short side (measured on
    25-MP photos for a 256-px resize: 2.4x faster decoding, embeddings at cosine >= 0.9998
    to the full decode).

    Args:
        keep_gray: return 8-bit greyscale ("L") images as they are instead of as RGB (the
            decoders resize them in one channel, a third of the work, and expand afterwards).
        max_pixels: refuse images with more pixels (``None``: no limit). Default:
            :func:`max_pixels_limit` (``$TRANSFERKIT_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`).

    Raises:
        UnreadableImageError: missing, empty, truncated, not an image, or over ``max_pixels``.
    """
    from PIL import Image, ImageOps

    limit = _resolve_max_pixels(max_pixels)
    try:
        with _pil_pixel_limit(limit), Image.open(path) as im:
            w, h = im.size
            if limit is not None and w * h > limit:
                raise UnreadableImageError(_bomb_reason((w, h), limit))
            if draft_size and im.format == "JPEG":
                # libjpeg may decode at 1/2, 1/4 or 1/8 scale, but keeps DRAFT_HEADROOM x the
                # requested size so the antialiased resize that follows gives the same
                # embedding: drafting straight to the target measured cosine 0.98 to the full
                # decode on some photos.
                scale = _draft_scale(w, h, draft_size)
                if scale >= 2:
                    im.draft("RGB", (int(w / scale) + 1, int(h / scale) + 1))
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # the copy it made cost 0.27 ms per ants/bees or flowers photo
            return im if keep_gray and im.mode == "L" else _to_rgb(im)
    except UnreadableImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise UnreadableImageError(_bomb_reason(None, limit, exc)) from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnreadableImageError(msg[:200]) from None


def _draft_scale(w: int, h: int, draft_size: int) -> float:
    """How many times larger than :data:`DRAFT_HEADROOM` x ``draft_size`` the short side is; JPEGs at 2 or more are drafted."""
    return min(w, h) / (draft_size * DRAFT_HEADROOM)


def decode_jpeg_rgbx(data: bytes, *, max_pixels: int | None = _FROM_ENV, draft_size: int | None = None):
    """A plain JPEG's pixels as a uint8 ``(H, W, 4)`` RGBX array, or None where :func:`load_image` must decode it.

    Decoded by libjpeg-turbo through ``simplejpeg`` straight into the array, with the GIL
    released: the same library, IDCT and chroma upsampling as Pillow, so the same pixels
    (checked on the 4,657 JPEGs of the shared datasets, all four chroma subsamplings), without
    Pillow's line-by-line unpacking. Read, hash, decode and resize of a ~500x375 photo measured
    2.2-2.7 ms against 3.3 ms through Pillow (BENCHMARKS.md, target 1).

    None, so that Pillow decides, for: simplejpeg not installed; not a JPEG; colour spaces
    other than YCbCr and greyscale (CMYK, YCCK, RGB); an EXIF orientation other than 1; an
    image :func:`load_image` would draft or refuse (``max_pixels``); and anything libjpeg
    reports as damaged.
    """
    if data[:2] != b"\xff\xd8":
        return None
    try:
        import simplejpeg
    except ImportError:
        return None
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    limit = _resolve_max_pixels(max_pixels)
    if colorspace not in ("YCbCr", "Gray") or (limit is not None and w * h > limit):
        return None
    if draft_size and _draft_scale(w, h, draft_size) >= 2:  # load_image drafts it
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG" or im.getexif().get(0x0112, 1) != 1:
                return None
    except Exception:  # noqa: BLE001 - whatever Pillow makes of it, load_image reports
        return None
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGBX", strict=True)
    except ValueError:  # damaged (strict: warnings too), or a variant libjpeg-turbo refuses
        return None


def _to_rgb(im):
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype("uint8"), mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


@dataclass
class ImageSet:
    """A list of labelled images.

    Attributes:
        paths: image files.
        labels: class index per image.
        classes: class names; ``labels`` index into it.
    """

    paths: list[Path]
    labels: list[int]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        out = {c: 0 for c in self.classes}
        for y in self.labels:
            out[self.classes[y]] += 1
        return out

    def subset(self, indices: Sequence[int]) -> ImageSet:
        return ImageSet([self.paths[i] for i in indices], [self.labels[i] for i in indices], self.classes)


@dataclass
class DatasetSplits:
    """A dataset folder resolved into train/val(/test) splits with one class list.

    Attributes:
        root: the dataset folder.
        classes: sorted class names (from training).
        train, val, test: the splits (``test`` may be None).
        layout: ``"split-folders"`` or ``"class-folders"`` (split by ``val_fraction``).
        skipped: files that could not be read, as ``{path: reason}``.
    """

    root: Path
    classes: list[str]
    train: ImageSet
    val: ImageSet
    test: ImageSet | None = None
    layout: str = "split-folders"
    skipped: dict[str, str] = field(default_factory=dict)

    def split(self, name: str) -> ImageSet:
        if name == "train":
            return self.train
        if name in ("val", "valid", "validation"):
            return self.val
        if name == "test":
            if self.test is None:
                raise DataError(f"No test/ split under {self.root}. Use --split val, or add {self.root}/test/<class>/*.jpg.")
            return self.test
        raise DataError(f"Unknown split {name!r}. Choose from: train, val, test.")

    def summary(self) -> dict:
        d = {
            "root": str(self.root),
            "layout": self.layout,
            "classes": self.classes,
            "num_classes": len(self.classes),
            "train": self.train.counts(),
            "val": self.val.counts(),
            "num_train": len(self.train),
            "num_val": len(self.val),
            "skipped_files": len(self.skipped),
        }
        if self.test is not None:
            d["test"] = self.test.counts()
            d["num_test"] = len(self.test)
        return d


def _find_child(root: Path, names: Iterable[str]) -> Path | None:
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() in names:
            return child
    return None


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _scan_split(folder: Path, classes: list[str] | None, skipped: dict[str, str], check: bool) -> tuple[list[Path], list[str]]:
    """Return (paths, class names per image) for a folder of class folders."""
    paths: list[Path] = []
    names: list[str] = []
    for cdir in _class_dirs(folder):
        for p in list_images(cdir):
            if check:
                reason = _header_problem(p)
                if reason:
                    skipped[str(p)] = reason
                    continue
            paths.append(p)
            names.append(cdir.name)
    return paths, names


def _header_problem(path: Path) -> str | None:
    """Cheap check (header only) that a file is an image; returns the reason if not."""
    from PIL import Image

    limit = max_pixels_limit()
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with _pil_pixel_limit(limit), Image.open(path) as im:
            w, h = im.size
            if w < 1 or h < 1:
                return "zero-size image"
            if limit is not None and w * h > limit:
                return _bomb_reason((w, h), limit)
    except Image.DecompressionBombError as exc:
        return _bomb_reason(None, limit, exc)
    except Exception as exc:  # noqa: BLE001
        return (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:200]
    return None


def check_folder(data: str | os.PathLike) -> Path:
    """Fail fast, before any work, when ``data`` is missing or not a folder."""
    root = Path(data)
    if not root.exists():
        raise DataNotFoundError(f"Dataset folder not found: {root}. Expected {root}/train/<class>/*.jpg or {root}/<class>/*.jpg.")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder. Expected {root}/train/<class>/*.jpg or {root}/<class>/*.jpg.")
    return root


def discover(data: str | os.PathLike, *, val_fraction: float = 0.2, seed: int = 0, check_files: bool = True) -> DatasetSplits:
    """Resolve a dataset folder into splits.

    ``data`` is either a folder with ``train/`` and ``val/`` (or ``valid/``; ``test/`` is
    kept for evaluation) holding class folders, or a folder of class folders that is split
    stratified by ``val_fraction`` with ``seed``.

    Raises:
        DataNotFoundError: the folder does not exist.
        DataError: no images, one class only, or validation classes missing from training.
    """
    root = check_folder(data)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in (0, 1); got {val_fraction}.")
    skipped: dict[str, str] = {}
    train_dir = _find_child(root, _TRAIN_NAMES)
    if train_dir is not None:
        val_dir = _find_child(root, _VAL_NAMES)
        test_dir = _find_child(root, _TEST_NAMES)
        tr_paths, tr_names = _scan_split(train_dir, None, skipped, check_files)
        classes = sorted(set(tr_names))
        _check_classes(classes, tr_paths, train_dir, skipped)
        if val_dir is None:
            # train/ without val/: split train stratified
            train, val = _stratified_split(tr_paths, tr_names, classes, val_fraction, seed)
            layout = "train-folder-split"
        else:
            train = ImageSet(tr_paths, [classes.index(n) for n in tr_names], classes)
            val = _labelled(val_dir, classes, skipped, check_files, "validation")
            layout = "split-folders"
        test = _labelled(test_dir, classes, skipped, check_files, "test") if test_dir is not None else None
        splits = DatasetSplits(root, classes, train, val, test, layout, skipped)
    else:
        paths, names = _scan_split(root, None, skipped, check_files)
        classes = sorted(set(names))
        _check_classes(classes, paths, root, skipped)
        train, val = _stratified_split(paths, names, classes, val_fraction, seed)
        splits = DatasetSplits(root, classes, train, val, None, "class-folders", skipped)
    if len(splits.val) == 0:
        raise DataError(f"The validation split of {root} is empty. Add images to {root}/val/<class>/ or lower --val-fraction.")
    for path, reason in skipped.items():
        log.warning("Skipped unreadable image %s: %s", path, reason)
    return splits


def _check_classes(classes: list[str], paths: list[Path], where: Path, skipped: dict[str, str]) -> None:
    if not paths:
        extra = f" ({len(skipped)} unreadable files skipped)" if skipped else ""
        raise DataError(f"No readable images found under {where}{extra}. Expected {where}/<class>/*.jpg (jpg, png, bmp, gif, webp, tiff).")
    if len(classes) < 2:
        raise DataError(f"Only one class ({classes[0]!r}) under {where}; a classifier needs at least two class folders.")


def _labelled(folder: Path, classes: list[str], skipped: dict[str, str], check: bool, what: str) -> ImageSet:
    paths, names = _scan_split(folder, classes, skipped, check)
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DataError(
            f"The {what} split has classes not in training: {', '.join(unknown)}. "
            f"Add them to the train folder or remove them from {folder}."
        )
    return ImageSet(paths, [classes.index(n) for n in names], classes)


def _stratified_split(paths, names, classes, val_fraction, seed) -> tuple[ImageSet, ImageSet]:
    rng = random.Random(seed)
    tr_idx: list[int] = []
    va_idx: list[int] = []
    for c in classes:
        idx = [i for i, n in enumerate(names) if n == c]
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        else:
            n_val = 0
        va_idx.extend(sorted(idx[:n_val]))
        tr_idx.extend(sorted(idx[n_val:]))
    labels = [classes.index(n) for n in names]
    full = ImageSet(list(paths), labels, classes)
    return full.subset(sorted(tr_idx)), full.subset(sorted(va_idx))


class ImageDataset:
    """A torch-style dataset over an :class:`ImageSet`; unreadable images yield ``None``.

    Items are ``(tensor, label, index)``; :func:`collate_skip` drops the ``None`` items
    and reports their indices, so a bad file never crashes a run.
    """

    def __init__(self, images: ImageSet, transform, *, max_pixels: int | None = _FROM_ENV, draft_size: int | None = None):
        self.images = images
        self.transform = transform
        self.max_pixels = _resolve_max_pixels(max_pixels)  # resolved here, so a bad setting fails before any worker starts
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        path = self.images.paths[i]
        try:
            im = load_image(path, max_pixels=self.max_pixels, draft_size=self.draft_size)
            return self.transform(im), self.images.labels[i], i, None
        except UnreadableImageError as exc:
            return None, self.images.labels[i], i, str(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. transform failure on a 1x1 image
            return None, self.images.labels[i], i, f"{type(exc).__name__}: {exc}"[:200]


def collate_skip(batch):
    """Stack the readable items; return ``(x, y, idx, bad)`` where ``bad`` is ``[(idx, reason)]``."""
    import torch

    good = [b for b in batch if b[0] is not None]
    bad = [(b[2], b[3]) for b in batch if b[0] is None]
    if not good:
        return None, None, None, bad
    x = torch.stack([b[0] for b in good])
    y = torch.tensor([b[1] for b in good], dtype=torch.long)
    idx = torch.tensor([b[2] for b in good], dtype=torch.long)
    return x, y, idx, bad


def default_num_workers() -> int:
    """Data-loading workers: one per core beyond the first, capped at 8."""
    n = os.cpu_count() or 1
    return max(0, min(8, n - 1)) if n > 1 else 0


def decode_threads() -> int:
    """Decoding threads for embedding: one per core (capped at 8).

    Threads, not processes, so they share the cores with the model: PIL releases the GIL
    while decoding and resizing. Measured on 2 cores (hymenoptera, OpenVINO):
    EfficientNet-Lite0 65 img/s with 1 thread, 97 with 2, 82 with 3.
    """
    return max(1, min(8, os.cpu_count() or 1))


#: How many decoded images may wait for the model (~75 MB at 224 px): enough to keep the
#: decoders busy while the model is converted and compiled on the first batch.
PREFETCH_IMAGES = 512


def prefetch_batches(dataset, batch_size: int, workers: int):
    """Collated batches in order, decoded by ``workers`` threads, up to :data:`PREFETCH_IMAGES` ahead (at least ``2 * workers`` batches)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    starts = range(0, len(dataset), batch_size)

    def load(start: int):
        return collate_items([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])

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


def collate_items(batch):
    """Stack the readable items of ``[(uint8 HWC array | None, index, info, reason)]``; return ``(x, indices, infos, bad)``.

    ``x`` is a ``(B, H, W, 3)`` view of planar (``B, 3, H, W`` C-contiguous) memory: the layout the
    OpenVINO graph takes without a copy (``x.transpose(0, 3, 1, 2)`` is contiguous) and the one
    PyTorch's resize kernel produces, so stacking is a plain copy per plane. (``np.stack`` kept
    the items' strides, and turning the batch into NHWC or NCHW later cost a byte-strided copy
    on the thread that feeds the model: 14 ms per 64 images; EfficientNet-Lite0 ran at 145-164
    images/s model only with that copy, 179-180 without.)
    """
    import numpy as np

    good = [b for b in batch if b[0] is not None]
    bad = [(b[1], b[3]) for b in batch if b[0] is None]
    if not good:
        return None, [], [], bad
    h, w, c = good[0][0].shape
    x = np.empty((len(good), c, h, w), dtype=good[0][0].dtype)
    for k, b in enumerate(good):
        x[k] = b[0].transpose(2, 0, 1)
    return x.transpose(0, 2, 3, 1), [b[1] for b in good], [b[2] for b in good], bad
