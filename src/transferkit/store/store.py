"""Embedding store: one LanceDB table in a folder, plus a JSON metadata file.

A store folder holds::

    transferkit_store.json   which model made the vectors (name, weights, preprocessing, dim),
                             how to rebuild it, format version; written atomically
    embeddings.lance/        the LanceDB table (one row per image)
    ann.*                    the optional approximate index (see :mod:`.index`)

Every write (``upsert``, ``delete``) is one LanceDB commit, so a process killed mid-way
leaves the table at the last complete commit; ``upsert`` merges on ``id`` so re-running a
partial embed never duplicates rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .. import __version__
from .._io import json_text, parse_json_object
from ..errors import CorruptStoreError, ModelMismatchError, StoreError
from . import _lance
from ._lance import COLUMNS, TABLE_NAME, sql_quote, table_errors, where_clause
from .batching import QueryBatcher
from .index import load_index
from .location import StoreLocation
from .search import normalize, search_vectors

__all__ = ["COLUMNS", "IDENTITY_KEYS", "META_NAME", "STORE_FORMAT_VERSION", "TABLE_NAME", "EmbeddingStore",
           "describe_model", "normalize", "same_model", "sql_quote"]

STORE_FORMAT_VERSION = 1
META_NAME = "transferkit_store.json"
#: Keys of a model id that decide whether two sets of embeddings are comparable.
IDENTITY_KEYS = ("backbone", "weights", "weights_digest", "preprocessing", "dim", "resize")
#: What a model id without the key meant (stores written before the key existed resized with PyTorch's uint8 kernel).
IDENTITY_DEFAULTS = {"resize": "torch-uint8"}


def describe_model(model_id: dict[str, Any]) -> str:
    """One-line human description of a model id."""
    pre = model_id.get("preprocessing") or {}
    size = pre.get("input_size", "?")
    what = f"{model_id.get('backbone')!s} (weights {model_id.get('weights')!s}, {size}px, dim {model_id.get('dim')!s}"
    if model_id.get("run_dir"):
        what += f", run {model_id['run_dir']}"
    return what + ")"


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two model ids produce comparable embeddings."""
    return all(a.get(k, IDENTITY_DEFAULTS.get(k)) == b.get(k, IDENTITY_DEFAULTS.get(k)) for k in IDENTITY_KEYS)


class EmbeddingStore:
    """L2-normalised image embeddings with their file metadata, in a LanceDB folder.

    Use :meth:`create`, :meth:`open` or :meth:`open_or_create`; the constructor is internal.

    Attributes:
        path: the store folder; for a store at a URI, the local cache folder of its derived files
            (index, map projections): :mod:`.location`.
        uri: what to open the store by: its folder path, or its URI (``s3://...``).
        meta: the parsed metadata (``model``, ``source``, ``dim``, ...).
        is_new: True when :meth:`create` made this store (it started empty).
    """

    def __init__(self, path: str | os.PathLike | StoreLocation, meta: dict[str, Any]):
        self.location = path if isinstance(path, StoreLocation) else StoreLocation(path)
        self.path = self.location.local
        self.uri = self.location.uri
        if self.location.remote:
            self.path.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        self._db = None
        self._table = None
        self._cache: dict[str, Any] | None = None
        self._ann: tuple[int, Any] | None = None  # (store version, its loaded AnnIndex or StreamedIndex)
        self.is_new = False

    # ------------------------------------------------------------------ open/create
    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def model_id(self) -> dict[str, Any]:
        return self.meta["model"]

    @classmethod
    def create(cls, path: str | os.PathLike, *, model_id: dict[str, Any], source: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None) -> EmbeddingStore:
        """Create an empty store in ``path`` (a new or empty folder): the metadata now, the LanceDB table at the first write or read.

        Raises:
            StoreError: ``path`` is a file, already a store, a non-empty folder, or cannot be written.
        """
        loc = StoreLocation(path)
        if loc.is_file():
            raise StoreError(f"The store path {loc} is a file. Pass a folder path for the embedding store.")
        if loc.has(META_NAME):
            raise StoreError(f"{loc} is already an embedding store. Open it instead, or pick a new folder.")
        if not loc.is_empty():
            raise StoreError(f"The store path {loc} is a non-empty folder that is not an embedding store. "
                             f"Pick a new or empty folder.")
        if "dim" not in model_id:
            raise ValueError("model_id needs a 'dim'")
        meta = {
            "format_version": STORE_FORMAT_VERSION,
            "transferkit_version": __version__,
            "model": dict(model_id),
            "source": dict(source or {}),
            "dim": int(model_id["dim"]),
            **(extra or {}),
        }
        try:
            loc.write_text(META_NAME, json_text(meta))
        except OSError as exc:
            raise StoreError(f"Cannot create the embedding store {loc}: {getattr(exc, 'strerror', None) or exc}. "
                             f"Pick a store folder inside a folder you can write to.") from None
        store = cls(loc, meta)
        store.is_new = True  # the table is created by the first write (or read): no LanceDB import until then
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, *, model_id: dict[str, Any] | None = None) -> EmbeddingStore:
        """Open an existing store; with ``model_id``, refuse if the store holds another model's embeddings.

        Raises:
            StoreError: missing folder, not a store.
            CorruptStoreError: corrupt metadata, other format version, damaged table.
            ModelMismatchError: ``model_id`` is not the store's model.
        """
        loc = StoreLocation(path)
        meta_path = loc.join(META_NAME)
        if not loc.exists():
            raise StoreError(f"Embedding store not found: {loc}. Embed images into it first.")
        if not loc.has(META_NAME):
            raise StoreError(f"{loc} is not a transferkit embedding store ({META_NAME} is missing). "
                             f"Pass a folder that images were embedded into.")
        remedy = "Embed the images into a new store."
        meta = parse_json_object(lambda: loc.read_text(META_NAME), meta_path, error=CorruptStoreError, what="store metadata",
                                 remedy=remedy)
        version = meta.get("format_version")
        if version != STORE_FORMAT_VERSION:
            raise CorruptStoreError(f"{loc} has store format version {version!r}; this transferkit ({__version__}) reads "
                                    f"version {STORE_FORMAT_VERSION}. Embed the images into a new store, or use the transferkit "
                                    f"that wrote it.")
        model = meta.get("model")
        if not isinstance(model, dict) or not isinstance(meta.get("dim"), int) or meta["dim"] < 1:
            raise CorruptStoreError(f"Corrupt store metadata {meta_path}: missing 'model' or 'dim'. {remedy}")
        if not isinstance(meta.get("source", {}), dict) or model.get("dim", meta["dim"]) != meta["dim"]:
            raise CorruptStoreError(f"Corrupt store metadata {meta_path}: 'source' or 'model.dim' is malformed. {remedy}")
        store = cls(loc, meta)
        store._open_table(create=True)  # first: a table that contradicts the metadata is damaged, whatever the model
        if model_id is not None:
            store.check_model(model_id)
        return store

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, *, model_id: dict[str, Any], source: dict[str, Any] | None = None,
                       extra: dict[str, Any] | None = None) -> EmbeddingStore:
        """Open the store at ``path`` for adding ``model_id`` embeddings, creating it if needed."""
        if StoreLocation(path).has(META_NAME):
            store = cls.open(path, model_id=model_id)
            if source and store.meta.get("source") != source:
                # Same model, rebuilt from a different place (e.g. a moved run folder): record where it lives now.
                store.update_meta(source=dict(source))
            return store
        return cls.create(path, model_id=model_id, source=source, extra=extra)

    def check_model(self, model_id: dict[str, Any]) -> None:
        """Raise :class:`ModelMismatchError` unless ``model_id`` matches the store's model."""
        if not same_model(self.model_id, model_id):
            raise ModelMismatchError(
                f"Store {self.uri} holds embeddings from {describe_model(self.model_id)}, but this model is "
                f"{describe_model(model_id)}; mixing them would make similarities meaningless. "
                f"Embed into a new store, or with the store's model ({self.model_id.get('backbone')})."
            )

    def update_meta(self, **fields: Any) -> None:
        """Merge ``fields`` into the metadata file (atomically)."""
        self.meta.update(fields)
        self.location.write_text(META_NAME, json_text(self.meta))

    @table_errors("open")
    def _open_table(self, *, create: bool):
        if self._table is not None:
            return self._table
        self._db = _lance.import_lancedb().connect(self.uri)
        if TABLE_NAME in _lance.list_tables(self._db):
            self._table = self._db.open_table(TABLE_NAME)
            size = getattr(self._table.schema.field("vector").type, "list_size", None)
            if size != self.dim:
                raise CorruptStoreError(f"Corrupt store {self.uri}: vectors have size {size}, metadata says {self.dim}. "
                                        f"Embed the images into a new store.")
        elif create:
            # exist_ok: a run killed between the metadata write and the first commit leaves no table.
            self._table = self._db.create_table(TABLE_NAME, schema=_lance.schema(self.dim), exist_ok=True)
        return self._table

    @property
    def table(self):
        """The LanceDB table."""
        return self._open_table(create=True)

    @property
    @table_errors("read")
    def version(self) -> int:
        """The table version; changes with every write (used to detect a stale index)."""
        return int(self.table.version)

    # ------------------------------------------------------------------ writes
    @table_errors("write to")
    def upsert(self, rows: Sequence[dict[str, Any]] | Any) -> int:
        """Insert or replace rows by ``id`` in one commit; vectors are L2-normalised here.

        Args:
            rows: dicts with the keys of :data:`COLUMNS`, or a ``pyarrow.Table`` of them.

        Returns:
            the number of rows written.
        """
        import pyarrow as pa

        if isinstance(rows, pa.Table):
            rows = rows.to_pylist()
        rows = list(rows)
        if not rows:
            return 0
        vectors = np.asarray([r["vector"] for r in rows], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise StoreError(f"Vectors of shape {vectors.shape} do not fit store {self.uri} (dim {self.dim}). "
                             f"Use a store made by the same model.")
        vectors = normalize(vectors)
        data = _lance.arrow_table({name: [r.get(name, _lance.DEFAULTS[name]) for r in rows] for name in COLUMNS[:-1]},
                                  vectors, self.dim)
        self.table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        self._cache = None
        return len(rows)

    @table_errors("write to")
    def delete(self, ids: Iterable[str]) -> int:
        """Delete rows by id (in chunks); returns how many ids were asked for."""
        ids = list(ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            self.table.delete("id IN (" + ", ".join(sql_quote(i) for i in chunk) + ")")
        if ids:
            self._cache = None
        return len(ids)

    # ------------------------------------------------------------------ reads
    @table_errors("read")
    def __len__(self) -> int:
        return int(self.table.count_rows())

    def rows(self, *, columns: Sequence[str] | None = None, where: str | None = None, label: str | None = None,
             split: str | None = None) -> list[dict[str, Any]]:
        """Rows as dicts (optionally only ``columns``, filtered by an SQL ``where`` and/or label/split)."""
        tbl = self._scan(columns=columns, where=where_clause(where, label, split))
        return tbl.to_pylist()

    def to_arrow(self, *, columns: Sequence[str] | None = None, where: str | None = None, label: str | None = None,
                 split: str | None = None):
        """The matching rows as one ``pyarrow.Table`` (optionally only ``columns``): one scan, for bulk readers such as
        :func:`~transferkit.find_duplicates` that want the vectors as a column rather than per-row dicts."""
        return self._scan(columns=columns, where=where_clause(where, label, split))

    @table_errors("read")
    def _scan(self, *, columns: Sequence[str] | None = None, where: str | None = None):
        # A vector-less query is a plain scan; it avoids needing pylance for filtered reads.
        q = self.table.search()
        if where:
            q = q.where(where)
        if columns is not None:
            q = q.select(list(columns))
        n = len(self)
        return q.limit(max(n, 1)).to_arrow()

    def get(self, id: str) -> dict[str, Any] | None:
        """The row with ``id``, or ``None``."""
        found = self.rows(where=f"id = {sql_quote(id)}")
        return found[0] if found else None

    def vectors(self, where: str | None = None, *, label: str | None = None, split: str | None = None) -> tuple[list[str], np.ndarray]:
        """``(ids, matrix)``: the (normalised, float32) vectors of the matching rows."""
        tbl = self._scan(columns=["id", "vector"], where=where_clause(where, label, split))
        return tbl.column("id").to_pylist(), _lance.matrix(tbl.column("vector"), self.dim)

    def snapshot(self, *, version: int | None = None) -> dict[str, Any]:
        """All ids, labels, splits, paths, the vector matrix, ``row_of`` (id -> row) and its ``batcher``, cached until the next write.

        ``version``: the store version the caller just read (saves reading it again).
        """
        version = self.version if version is None else version
        if self._cache is None or self._cache["version"] != version:
            tbl = self._scan(columns=["id", "path", "relpath", "label", "split", "vector"])
            self._cache = {
                "version": version,
                "id": np.asarray(tbl.column("id").to_pylist(), dtype=object),
                "path": tbl.column("path").to_pylist(),
                "relpath": tbl.column("relpath").to_pylist(),
                "label": np.asarray(tbl.column("label").to_pylist(), dtype=object),
                "split": np.asarray(tbl.column("split").to_pylist(), dtype=object),
                "vectors": _lance.matrix(tbl.column("vector"), self.dim),
            }
            self._cache["row_of"] = {i: r for r, i in enumerate(self._cache["id"].tolist())}  # id -> row, once per version
            self._cache["batcher"] = QueryBatcher(self._cache["vectors"])
        return self._cache

    # ------------------------------------------------------------------ search
    def ann_index(self, *, version: int | None = None):
        """The approximate index, loaded once per store version; ``None`` when none was built or it is out of date.

        An :class:`~transferkit.store.index.AnnIndex`, or for a store bigger than RAM a
        :class:`~transferkit.store.streamed.StreamedIndex` (``streamed`` true: no positions, row ids).

        Args:
            version: the store version the caller just read (:meth:`snapshot` has it); saves
                reading it again (0.3 ms, as long as an exact search of a small store).
        """
        version = self.version if version is None else version
        if self._ann is None or self._ann[0] != version:
            self._ann = (version, load_index(self))
        return self._ann[1]

    def ann_index_changed(self) -> None:
        """Forget the loaded index (it was rebuilt): the next search loads the one on disk."""
        self._ann = None

    def search(self, query: np.ndarray, top_k: int = 5, *, label: str | None = None, split: str | None = None,
               exact: bool = False, exclude_ids: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The ``top_k`` rows most cosine-similar to the vector ``query``.

        Uses the approximate index built by :func:`~transferkit.build_index` when it exists, is
        up to date and no label/split filter is given; otherwise exact search. To query by
        image or by stored id, see :func:`~transferkit.search_store`.

        Returns:
            dicts with ``rank`` (1-based), ``score`` (cosine similarity), ``id``, ``path``,
            ``relpath``, ``label``, ``split``, best first.

        Raises:
            ConfigError: zero query vector, wrong dimension, ``top_k`` < 1.
        """
        return search_vectors(self, query, top_k=top_k, label=label, split=split, exact=exact, exclude_ids=exclude_ids)
