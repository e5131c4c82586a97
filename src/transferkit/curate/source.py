"""The vectors a curation step works on: an existing store's, or an image folder's embedded into a store.

A folder goes through :func:`~transferkit.embed_folder`, the path ``transferkit embed`` takes,
into a store the caller names or one kept in the cache folder per (folder, model): a second
look at the same folder embeds only new or changed files.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._hashing import bytes_digest
from ..config import Settings, resolve_settings
from ..errors import ConfigError, StoreError
from ..events import Reporter
from ..store.store import META_NAME, EmbeddingStore, describe_model

#: The backbone a folder is embedded with when no ``model`` is given: its weights ship with the package (works offline).
DEFAULT_MODEL = "efficientnet_lite0"
#: Sub-folder of the cache folder holding the stores of folders embedded without a ``store``.
CACHE_SUBDIR = "curate-stores"


@dataclass
class RankedRow:
    """A store row in a curation ranking: its place (1 = first) and where the image is."""

    rank: int
    id: str
    path: str
    relpath: str
    split: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StoreRows:
    """The rows of a store (optionally one split): ids, files, labels and the normalised vectors.

    Attributes:
        ids, paths, relpaths, labels, splits: per row (``labels`` ``""`` where unlabelled).
        vectors: ``(N, D)`` float32, L2-normalised.
        store: the open store they came from.
        embedded: what embedding the folder did (:meth:`EmbedReport.to_dict`), or None for a store.
    """

    ids: np.ndarray
    paths: list[str]
    relpaths: list[str]
    labels: np.ndarray
    splits: np.ndarray
    vectors: np.ndarray
    store: EmbeddingStore
    embedded: dict[str, Any] | None = field(default=None)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def model(self) -> str:
        """The store's model, described in one line."""
        return describe_model(self.store.model_id)

    def subset(self, rows: np.ndarray) -> StoreRows:
        """The rows at positions ``rows``."""
        return StoreRows(self.ids[rows], [self.paths[i] for i in rows], [self.relpaths[i] for i in rows], self.labels[rows],
                         self.splits[rows], self.vectors[rows], self.store, self.embedded)


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an embedding store folder."""
    return (Path(path) / META_NAME).is_file()


def _extractor(model: Any, settings: Settings):
    from ..embed.extractor import Extractor

    if isinstance(model, Extractor):
        return model
    name = DEFAULT_MODEL if model is None else model
    if isinstance(name, os.PathLike) or (isinstance(name, str) and Path(name).is_dir()):
        return Extractor.from_run(name, settings=settings)
    if not isinstance(name, str):
        raise ConfigError(f"`model` must be a backbone name, a trained run folder or an Extractor; got {type(model).__name__}.")
    return Extractor.from_backbone(name, settings=settings)


def cached_store_path(data: str | os.PathLike, model_id: dict[str, Any], settings: Settings) -> Path:
    """Where the store of ``data`` embedded by ``model_id`` is kept when the caller names none."""
    key = json.dumps({"data": str(Path(data).resolve()), "model": model_id}, sort_keys=True, default=str)
    return settings.cache_dir / CACHE_SUBDIR / bytes_digest(key.encode())


def load_rows(data_or_store: Any, *, model: Any = None, store: str | os.PathLike | None = None, split: str | None = None,
              batch_size: int = 64, reporter: Reporter | None = None, settings: Settings | None = None) -> StoreRows:
    """The rows to curate: those of a store, or of an image folder embedded first.

    Args:
        data_or_store: an :class:`~transferkit.EmbeddingStore`, a store folder, or an image folder.
        model: for a folder: a backbone name (default :data:`DEFAULT_MODEL`), a trained run folder
            or an :class:`~transferkit.Extractor`. For a store: None, or the store's own backbone.
        store: for a folder: the store to embed into (default: one in the cache folder).
        split: only the rows of this split (``train``, ``val``, ``all``, ...).
        batch_size: images per forward pass when embedding.
        reporter: progress of the embedding.
        settings: cache folder and pixel limit.

    Raises:
        ConfigError: ``model`` or ``store`` given with a store, or a bad ``model``.
        StoreError: the store is missing or empty, or no row is in ``split``.
        DataError / DataNotFoundError: a bad image folder.
    """
    settings = resolve_settings(settings)
    reporter = reporter or Reporter(None)
    embedded = None
    if isinstance(data_or_store, EmbeddingStore) or is_store(data_or_store):
        opened = data_or_store if isinstance(data_or_store, EmbeddingStore) else EmbeddingStore.open(data_or_store)
        if store is not None:
            raise ConfigError(f"{opened.path} is a store already; `store` applies to an image folder only. Drop it.")
        backbone = opened.model_id.get("backbone")
        if model is not None and model != backbone:
            raise ConfigError(f"The store {opened.path} holds embeddings of {backbone!r}, not of `model` {model!r}. "
                              f"Drop `model` to use the store's vectors, or pass the image folder to embed it with {model!r}.")
    else:
        from ..embed.local import embed_folder

        extractor = _extractor(model, settings)
        target = Path(store) if store is not None else cached_store_path(data_or_store, extractor.model_id, settings)
        report = embed_folder(extractor, data_or_store, target, batch_size=batch_size, progress=reporter, settings=settings)
        embedded = report.to_dict()
        reporter.message(f"Embedded {data_or_store}: {report.added} added, {report.updated} updated, {report.removed} removed, "
                         f"{report.unchanged} unchanged, {len(report.skipped)} skipped; store {report.store}",
                         **{k: embedded[k] for k in ("added", "updated", "removed", "unchanged", "skipped", "store")})
        opened = EmbeddingStore.open(target)
    snap = opened.snapshot()
    if len(snap["id"]) == 0:
        raise StoreError(f"The store {opened.path} is empty; embed images into it first.")
    rows = StoreRows(snap["id"], snap["path"], snap["relpath"], snap["label"], snap["split"], snap["vectors"], opened, embedded)
    if split is not None:
        keep = np.flatnonzero(rows.splits == split)
        if keep.size == 0:
            have = ", ".join(sorted(set(rows.splits.tolist())))
            raise StoreError(f"No rows of the store {opened.path} are in `split` {split!r}. Its splits: {have}.")
        rows = rows.subset(keep)
    return rows
