"""The one folder-layout parser: image files, split folders and class folders.

A folder is read one way for every step: its subfolders named like a split (:data:`SPLIT_NAMES`)
are the splits, else the folder itself is one split (``"all"``); inside a split, each
subfolder is a class and images directly inside have no label. :func:`discover` (training
splits) and :func:`scan_folder` (embedding entries) both walk it through :func:`resolve_layout`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Settings, resolve_settings
from ..errors import DataError, DataNotFoundError
from .decode import header_problem

log = logging.getLogger("transferkit")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Folder names (any case) that are splits, by role.
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
_OS_CLUTTER = {".ds_store", "thumbs.db", "desktop.ini"}


def split_role(name: str) -> str | None:
    """``"train"``, ``"val"`` or ``"test"`` for a folder named like a split (any case), else None."""
    low = name.lower()
    return next((role for role, names in SPLIT_NAMES.items() if low in names), None)


def is_image_file(path: Path) -> bool:
    """Whether ``path`` looks like an image by name (hidden files and OS clutter excluded)."""
    name = path.name
    if name.startswith(".") or name.lower() in _OS_CLUTTER:
        return False
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _keep(p: Path) -> bool:
    # a dangling or looping symlink is kept, so it is reported as unreadable rather than vanishing
    return is_image_file(p) and (p.is_file() or p.is_symlink())


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
        out.extend(p for p in (Path(dirpath) / f for f in sorted(filenames)) if _keep(p))
    return out


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


@dataclass(frozen=True)
class Group:
    """One split of a folder: its name as stored (the folder's own name, or ``"all"``), its role and folder."""

    name: str
    role: str | None
    folder: Path

    def images(self, *, loose: bool = True) -> Iterator[tuple[str, Path]]:
        """``(label, path)``: images directly inside (label ``""``, unless not ``loose``), then each class folder's."""
        if loose:
            yield from (("", p) for p in sorted(self.folder.iterdir()) if _keep(p))
        for cdir in _subdirs(self.folder):
            yield from ((cdir.name, p) for p in list_images(cdir))


@dataclass(frozen=True)
class FolderLayout:
    """A folder resolved into its splits (see the module docstring)."""

    root: Path
    groups: tuple[Group, ...]

    @property
    def has_splits(self) -> bool:
        return self.groups[0].role is not None

    def first(self, role: str) -> Group | None:
        """The first split folder (sorted by name) with ``role``."""
        return next((g for g in self.groups if g.role == role), None)


def resolve_layout(root: Path) -> FolderLayout:
    """The splits of ``root``: every subfolder named like a split, else ``root`` itself as split ``"all"``."""
    splits = tuple(Group(d.name, split_role(d.name), d) for d in _subdirs(root) if split_role(d.name))
    return FolderLayout(root, splits or (Group("all", None, root),))


def check_folder(data: str | os.PathLike, *, what: str = "Dataset folder",
                 expected: str = "{root}/train/<class>/*.jpg or {root}/<class>/*.jpg") -> Path:
    """Fail fast, before any work, when ``data`` is missing or not a folder."""
    root = Path(data)
    hint = expected.format(root=root)
    if not root.exists():
        raise DataNotFoundError(f"{what} not found: {root}. Expected {hint}.")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder. Expected {hint}.")
    return root


# ---------------------------------------------------------------------- embedding entries
@dataclass
class ImageEntry:
    """One image found under DATA."""

    path: Path
    relpath: str
    label: str
    split: str

    @property
    def id(self) -> str:
        return row_id(self.relpath)


def row_id(relpath: str) -> str:
    """Stable row id: blake2b-128 of the path relative to DATA (so a moved folder keeps its ids)."""
    return hashlib.blake2b(relpath.encode("utf-8"), digest_size=16).hexdigest()


def scan_folder(data: str | os.PathLike) -> list[ImageEntry]:
    """Images under ``data`` with their split and label.

    Layouts: ``DATA/<split>/<class>/*`` (split = the split folder's name), ``DATA/<class>/*``
    (split ``"all"``), or a flat ``DATA/*`` (label ``""``, split ``"all"``). Images directly
    inside a split folder or DATA get label ``""``.

    Raises:
        DataNotFoundError: ``data`` does not exist.
        DataError: not a folder, or no images.
    """
    root = check_folder(data, what="Image folder", expected="{root}/<class>/*.jpg, {root}/train/<class>/*.jpg or {root}/*.jpg")
    root = root.resolve()
    entries = [ImageEntry(p, p.relative_to(root).as_posix(), label, g.name)
               for g in resolve_layout(root).groups for label, p in g.images()]
    if not entries:
        raise DataError(f"No images found under {root}. Expected {root}/<class>/*.jpg, {root}/train/<class>/*.jpg or {root}/*.jpg "
                        f"(jpg, png, bmp, gif, webp, tiff).")
    return entries


# ---------------------------------------------------------------------- training splits
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
        layout: ``"split-folders"``, ``"train-folder-split"`` (val split off train/) or
            ``"class-folders"`` (split by ``val_fraction``).
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
        role = split_role(name)
        if role == "train":
            return self.train
        if role == "val":
            return self.val
        if role == "test":
            if self.test is None:
                raise DataError(f"No test/ split under {self.root}. Set `split` to val, or add {self.root}/test/<class>/*.jpg.")
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


def discover(data: str | os.PathLike, *, val_fraction: float = 0.2, seed: int = 0, check_files: bool = True,
             settings: Settings | None = None) -> DatasetSplits:
    """Resolve a dataset folder into splits.

    ``data`` is either a folder with ``train/`` and ``val/`` (or ``valid/``; ``test/`` is
    kept for evaluation) holding class folders, or a folder of class folders that is split
    stratified by ``val_fraction`` with ``seed``. Images outside class folders are ignored.

    Raises:
        DataNotFoundError: the folder does not exist.
        DataError: no images, one class only, split folders without a train folder, or
            validation classes missing from training.
    """
    root = check_folder(data)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"`val_fraction` must be in (0, 1); got {val_fraction}.")
    limit = resolve_settings(settings).max_pixels if check_files else None
    skipped: dict[str, str] = {}
    layout = resolve_layout(root)
    if layout.has_splits:
        train_group = layout.first("train")
        if train_group is None:
            names = ", ".join(f"{g.name}/" for g in layout.groups)
            raise DataError(f"{root} has split folders ({names}) but no train/ folder. Add {root}/train/<class>/*.jpg, "
                            f"or put the class folders directly in {root} to split them by `val_fraction`.")
        tr_paths, tr_names = _labelled_files(train_group, skipped, check_files, limit)
        classes = sorted(set(tr_names))
        _check_classes(classes, tr_paths, train_group.folder, skipped)
        val_group, test_group = layout.first("val"), layout.first("test")
        if val_group is None:
            train, val = _stratified_split(tr_paths, tr_names, classes, val_fraction, seed)
            kind = "train-folder-split"
        else:
            train = ImageSet(tr_paths, [classes.index(n) for n in tr_names], classes)
            val = _known_classes(val_group, classes, skipped, check_files, limit, "validation")
            kind = "split-folders"
        test = _known_classes(test_group, classes, skipped, check_files, limit, "test") if test_group else None
        splits = DatasetSplits(root, classes, train, val, test, kind, skipped)
    else:
        paths, names = _labelled_files(layout.groups[0], skipped, check_files, limit)
        classes = sorted(set(names))
        _check_classes(classes, paths, root, skipped)
        train, val = _stratified_split(paths, names, classes, val_fraction, seed)
        splits = DatasetSplits(root, classes, train, val, None, "class-folders", skipped)
    if len(splits.val) == 0:
        raise DataError(f"The validation split of {root} is empty. Add images to {root}/val/<class>/ or lower `val_fraction`.")
    for path, reason in skipped.items():
        log.warning("Skipped unreadable image %s: %s", path, reason)
    return splits


def _labelled_files(group: Group, skipped: dict[str, str], check: bool, limit: int | None) -> tuple[list[Path], list[str]]:
    """(paths, class name per image) of a split's class folders; files failing the header check go to ``skipped``."""
    paths: list[Path] = []
    names: list[str] = []
    for label, p in group.images(loose=False):
        reason = header_problem(p, max_pixels=limit) if check else None
        if reason:
            skipped[str(p)] = reason
            continue
        paths.append(p)
        names.append(label)
    return paths, names


def _check_classes(classes: list[str], paths: list[Path], where: Path, skipped: dict[str, str]) -> None:
    if not paths:
        extra = f" ({len(skipped)} unreadable files skipped)" if skipped else ""
        raise DataError(f"No readable images found under {where}{extra}. Expected {where}/<class>/*.jpg (jpg, png, bmp, gif, webp, tiff).")
    if len(classes) < 2:
        raise DataError(f"Only one class ({classes[0]!r}) under {where}; a classifier needs at least two class folders.")


def _known_classes(group: Group, classes: list[str], skipped: dict[str, str], check: bool, limit: int | None,
                   what: str) -> ImageSet:
    paths, names = _labelled_files(group, skipped, check, limit)
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DataError(
            f"The {what} split has classes not in training: {', '.join(unknown)}. "
            f"Add them to the train folder or remove them from {group.folder}."
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
        n_val = min(max(n_val, 1), len(idx) - 1) if len(idx) >= 2 else 0
        va_idx.extend(sorted(idx[:n_val]))
        tr_idx.extend(sorted(idx[n_val:]))
    labels = [classes.index(n) for n in names]
    full = ImageSet(list(paths), labels, classes)
    return full.subset(sorted(tr_idx)), full.subset(sorted(va_idx))
