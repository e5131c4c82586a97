"""Embedding store: one LanceDB table in a folder, plus a JSON metadata file.

A store folder holds::

    transferkit_store.json   which model made the vectors (name, weights, preprocessing, dim),
                             how to rebuild it, format version; written atomically
    embeddings.lance/        the LanceDB table (one row per image)
    ann.*                    the optional approximate index (see :mod:`transferkit.search`)

Every write (``upsert``, ``delete``) is one LanceDB commit, so a process killed mid-way
leaves the table at the last complete commit; ``upsert`` merges on ``id`` so re-running a
partial embed never duplicates rows.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .._io import read_json_object, write_json_atomic
from ..errors import ModelMismatchError, StoreError, TransferKitError

STORE_FORMAT_VERSION = 1
META_NAME = "transferkit_store.json"
TABLE_NAME = "embeddings"
#: Keys of a model id that decide whether two sets of embeddings are comparable.
IDENTITY_KEYS = ("backbone", "weights", "weights_digest", "preprocessing", "dim")
COLUMNS = ("id", "path", "relpath", "label", "split", "width", "height", "fingerprint", "size", "mtime", "vector")


#: LanceDB imports ``lance_namespace``, whose generated REST client package imports its nine
#: API modules (136 pydantic-validated methods in ``table_api`` alone) from its ``__init__``:
#: 0.9 s of the 1.4-1.8 s ``import lancedb`` takes here, for a client only a remote namespace uses.
_DEFERRED_PACKAGE = "lance_namespace_urllib3_client"


def _import_lancedb():
    """``import lancedb``, with the REST client package's ``__init__`` run only when something uses it.

    The package is registered in ``sys.modules`` without running its ``__init__``, so the
    submodules LanceDB imports at start-up (``...client.models``) load as usual; the first
    attribute read from the package itself (a remote namespace's ``ApiClient``, say) runs
    ``__init__`` then. Where the package cannot be located that way, the plain import runs.
    """
    import sys

    if "lancedb" not in sys.modules and _DEFERRED_PACKAGE not in sys.modules:
        _register_deferred(_DEFERRED_PACKAGE)
    import lancedb

    return lancedb


def _register_deferred(name: str) -> None:
    import importlib.util
    import sys
    import threading

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    module = importlib.util.module_from_spec(spec)
    lock = threading.RLock()  # __init__ itself reads attributes of the package while it runs
    state = {"ran": False}

    def __getattr__(attr: str):
        with lock:
            if not state["ran"]:
                state["ran"] = True
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(name, None)  # the next import retries from scratch
                    raise
        if attr in module.__dict__:
            return module.__dict__[attr]
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    module.__getattr__ = __getattr__
    sys.modules[name] = module


def _schema(dim: int):
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("path", pa.string()),
            pa.field("relpath", pa.string()),
            pa.field("label", pa.string()),
            pa.field("split", pa.string()),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("fingerprint", pa.string()),
            pa.field("size", pa.int64()),
            pa.field("mtime", pa.int64()),  # nanoseconds
            pa.field("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def _table_errors(action: str):
    """Turn LanceDB/Arrow failures on damaged table files into a :class:`StoreError` with the fix."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except TransferKitError:
                raise
            except (RuntimeError, OSError, ValueError) as exc:  # lance raises RuntimeError, Arrow ValueError subclasses
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                raise StoreError(
                    f"Cannot {action} the embedding store {self.path}: its table files are damaged ({first}). "
                    f"Re-create it with `transferkit embed DATA --store NEW_FOLDER`, or restore the folder from a backup."
                ) from None

        return inner

    return wrap


def sql_quote(value: str) -> str:
    """Quote a string literal for a LanceDB filter."""
    return "'" + str(value).replace("'", "''") + "'"


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
    return all(a.get(k) == b.get(k) for k in IDENTITY_KEYS)


class EmbeddingStore:
    """L2-normalised image embeddings with their file metadata, in a LanceDB folder.

    Use :meth:`create`, :meth:`open` or :meth:`open_or_create`; the constructor is internal.

    Attributes:
        path: the store folder.
        meta: the parsed metadata (``model``, ``source``, ``dim``, ...).
    """

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path = Path(path)
        self.meta = meta
        self._db = None
        self._table = None
        self._cache: dict[str, Any] | None = None
        self._ann_cache: tuple[int, Any] | None = None  # (store version, AnnIndex or None), see search.py
        #: True when :meth:`create` made this store (it started empty).
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
            StoreError: ``path`` is a file, already a store, or a non-empty folder.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise StoreError(f"--store {path} is a file. Pass a folder path for the embedding store.")
        if (path / META_NAME).exists():
            raise StoreError(f"{path} is already an embedding store. Open it instead, or pick a new --store folder.")
        if path.exists() and any(path.iterdir()):
            raise StoreError(f"--store {path} is a non-empty folder that is not an embedding store. Pick a new or empty folder.")
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
            path.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path / META_NAME, meta)
        except OSError as exc:
            raise StoreError(f"Cannot create the embedding store {path}: {exc.strerror or exc}. "
                             f"Pass a --store path inside a folder you can write to.") from None
        store = cls(path, meta)
        store.is_new = True  # the table is created by the first write (or read): no LanceDB import until then
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, *, model_id: dict[str, Any] | None = None) -> EmbeddingStore:
        """Open an existing store; with ``model_id``, refuse if the store holds another model's embeddings.

        Raises:
            StoreError: missing folder, not a store, corrupt metadata, other format version.
            ModelMismatchError: ``model_id`` is not the store's model.
        """
        path = Path(path)
        meta_path = path / META_NAME
        if not path.exists():
            raise StoreError(f"Embedding store not found: {path}. Create it with `transferkit embed DATA --model NAME --store {path}`.")
        if not meta_path.exists():
            raise StoreError(f"{path} is not a transferkit embedding store ({META_NAME} is missing). "
                             f"Point --store to a folder made by `transferkit embed`.")
        meta = read_json_object(meta_path, error=StoreError, what="store metadata",
                                remedy="Re-create the store with `transferkit embed` into a new --store.")
        version = meta.get("format_version")
        if version != STORE_FORMAT_VERSION:
            raise StoreError(f"{path} has store format version {version!r}; this transferkit ({__version__}) reads version "
                             f"{STORE_FORMAT_VERSION}. Re-embed into a new --store, or use the transferkit that wrote it.")
        model = meta.get("model")
        if not isinstance(model, dict) or not isinstance(meta.get("dim"), int) or meta["dim"] < 1:
            raise StoreError(f"Corrupt store metadata {meta_path}: missing 'model' or 'dim'. Re-create the store into a new --store.")
        if not isinstance(meta.get("source", {}), dict) or model.get("dim", meta["dim"]) != meta["dim"]:
            raise StoreError(f"Corrupt store metadata {meta_path}: 'source' or 'model.dim' is malformed. "
                             f"Re-create the store into a new --store.")
        store = cls(path, meta)
        if model_id is not None:
            store.check_model(model_id)
        store._open_table(create=True)
        return store

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, *, model_id: dict[str, Any], source: dict[str, Any] | None = None,
                       extra: dict[str, Any] | None = None) -> EmbeddingStore:
        """Open the store at ``path`` for adding ``model_id`` embeddings, creating it if needed."""
        path = Path(path)
        if (path / META_NAME).exists():
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
                f"Store {self.path} holds embeddings from {describe_model(self.model_id)}, but this model is "
                f"{describe_model(model_id)}; mixing them would make similarities meaningless. "
                f"Use a new --store folder, or embed with the store's model (--model {self.model_id.get('backbone')})."
            )

    def update_meta(self, **fields: Any) -> None:
        """Merge ``fields`` into the metadata file (atomically)."""
        self.meta.update(fields)
        write_json_atomic(self.path / META_NAME, self.meta)

    @_table_errors("open")
    def _open_table(self, *, create: bool):
        if self._table is not None:
            return self._table
        lancedb = _import_lancedb()
        self._db = lancedb.connect(str(self.path))
        try:
            names = list(self._db.list_tables().tables) if hasattr(self._db, "list_tables") else list(self._db.table_names())
        except Exception:  # noqa: BLE001 - older/newer client return types differ
            names = list(self._db.table_names())
        if TABLE_NAME in names:
            self._table = self._db.open_table(TABLE_NAME)
            field = self._table.schema.field("vector")
            size = getattr(field.type, "list_size", None)
            if size != self.dim:
                raise StoreError(f"Corrupt store {self.path}: vectors have size {size}, metadata says {self.dim}. Re-create the store.")
        elif create:
            # exist_ok: a run killed between the metadata write and the first commit leaves no table.
            self._table = self._db.create_table(TABLE_NAME, schema=_schema(self.dim), exist_ok=True)
        return self._table

    @property
    def table(self):
        """The LanceDB table."""
        return self._open_table(create=True)

    @property
    @_table_errors("read")
    def version(self) -> int:
        """The table version; changes with every write (used to detect a stale index)."""
        return int(self.table.version)

    # ------------------------------------------------------------------ writes
    @_table_errors("write to")
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
            raise StoreError(f"Vectors of shape {vectors.shape} do not fit store {self.path} (dim {self.dim}). Use a store made by the same model.")
        vectors = normalize(vectors)
        schema = _schema(self.dim)
        cols: dict[str, Any] = {}
        for name in COLUMNS[:-1]:
            cols[name] = pa.array([r.get(name, _DEFAULTS[name]) for r in rows], type=schema.field(name).type)
        cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), type=pa.float32()), self.dim)
        data = pa.table(cols, schema=schema)
        self.table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        self._cache = None
        return len(rows)

    @_table_errors("write to")
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
    @_table_errors("read")
    def __len__(self) -> int:
        return int(self.table.count_rows())

    def rows(self, *, columns: Sequence[str] | None = None, where: str | None = None, label: str | None = None,
             split: str | None = None) -> list[dict[str, Any]]:
        """Rows as dicts (optionally only ``columns``, filtered by an SQL ``where`` and/or label/split)."""
        tbl = self._scan(columns=columns, where=_where(where, label, split))
        return tbl.to_pylist()

    @_table_errors("read")
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
        tbl = self._scan(columns=["id", "vector"], where=_where(where, label, split))
        return tbl.column("id").to_pylist(), _matrix(tbl.column("vector"), self.dim)

    def snapshot(self) -> dict[str, Any]:
        """All ids, labels, splits, paths and the vector matrix, cached until the next write."""
        if self._cache is None or self._cache["version"] != self.version:
            tbl = self._scan(columns=["id", "path", "relpath", "label", "split", "vector"])
            self._cache = {
                "version": self.version,
                "id": np.asarray(tbl.column("id").to_pylist(), dtype=object),
                "path": tbl.column("path").to_pylist(),
                "relpath": tbl.column("relpath").to_pylist(),
                "label": np.asarray(tbl.column("label").to_pylist(), dtype=object),
                "split": np.asarray(tbl.column("split").to_pylist(), dtype=object),
                "vectors": _matrix(tbl.column("vector"), self.dim),
            }
        return self._cache

    def search(self, query: np.ndarray, top_k: int = 5, *, label: str | None = None, split: str | None = None,
               exact: bool = False, exclude_ids: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The ``top_k`` rows most cosine-similar to ``query``.

        Uses the approximate index built by :func:`transferkit.search.build_index` when it
        exists, is up to date and no label/split filter is given; otherwise exact search.

        Returns:
            dicts with ``rank`` (1-based), ``score`` (cosine similarity), ``id``, ``path``,
            ``relpath``, ``label``, ``split``, best first.

        Raises:
            ConfigError: zero query vector, wrong dimension, ``top_k`` < 1.
        """
        from .search import search_store

        return search_store(self, query, top_k=top_k, label=label, split=split, exact=exact, exclude_ids=exclude_ids)


_DEFAULTS: dict[str, Any] = {"id": None, "path": "", "relpath": "", "label": "", "split": "all", "width": 0, "height": 0,
                             "fingerprint": "", "size": 0, "mtime": 0}


def _where(where: str | None, label: str | None, split: str | None) -> str | None:
    parts = [f"({where})"] if where else []
    if label is not None:
        parts.append(f"label = {sql_quote(label)}")
    if split is not None:
        parts.append(f"split = {sql_quote(split)}")
    return " AND ".join(parts) or None


def _matrix(column, dim: int) -> np.ndarray:
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], type=pa.list_(pa.float32(), dim))
    if len(column) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(len(column), dim), dtype=np.float32)


def normalize(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)
