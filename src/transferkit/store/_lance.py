"""The LanceDB side of the store: the import, the table schema, reading vectors out of Arrow,
and turning failures on damaged table files into :class:`~transferkit.errors.CorruptStoreError`."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..errors import CorruptStoreError, TransferKitError

TABLE_NAME = "embeddings"
COLUMNS = ("id", "path", "relpath", "label", "split", "width", "height", "fingerprint", "size", "mtime", "vector")
DEFAULTS: dict[str, Any] = {"id": None, "path": "", "relpath": "", "label": "", "split": "all", "width": 0, "height": 0,
                            "fingerprint": "", "size": 0, "mtime": 0}


def import_lancedb():
    """``import lancedb``, only when a table is first opened, so that creating a store's metadata stays cheap."""
    import lancedb

    return lancedb


def schema(dim: int):
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


def arrow_table(columns: dict[str, Any], vectors: np.ndarray, dim: int):
    """The table of rows given as ``{column: values}`` (missing columns take :data:`DEFAULTS`) and a ``(N, dim)`` matrix."""
    import pyarrow as pa

    sch = schema(dim)
    n = len(vectors)
    cols = {name: pa.array(columns[name] if name in columns else [DEFAULTS[name]] * n, type=sch.field(name).type)
            for name in COLUMNS[:-1]}
    cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(vectors, dtype=np.float32).ravel(), type=pa.float32()), dim)
    return pa.table(cols, schema=sch)


def sql_quote(value: str) -> str:
    """Quote a string literal for a LanceDB filter."""
    return "'" + str(value).replace("'", "''") + "'"


def where_clause(where: str | None, label: str | None, split: str | None) -> str | None:
    """An SQL filter: ``where`` and/or an exact label and split, or ``None`` for all rows."""
    parts = [f"({where})"] if where else []
    if label is not None:
        parts.append(f"label = {sql_quote(label)}")
    if split is not None:
        parts.append(f"split = {sql_quote(split)}")
    return " AND ".join(parts) or None


def list_tables(db) -> list[str]:
    try:
        return list(db.list_tables().tables) if hasattr(db, "list_tables") else list(db.table_names())
    except Exception:  # noqa: BLE001 - older/newer client return types differ
        return list(db.table_names())


def table_errors(action: str):
    """Decorate a store method: LanceDB/Arrow failures on damaged table files become a :class:`CorruptStoreError` with the fix."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except TransferKitError:
                raise
            except (RuntimeError, OSError, ValueError) as exc:  # lance raises RuntimeError, Arrow ValueError subclasses
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                raise CorruptStoreError(
                    f"Cannot {action} the embedding store {self.uri}: its table files are damaged ({first}). "
                    f"Embed the images into a new store, or restore the folder from a backup."
                ) from None

        return inner

    return wrap


def matrix(column, dim: int) -> np.ndarray:
    """A fixed-size-list Arrow column of vectors as a contiguous float32 ``(N, dim)`` matrix."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], type=pa.list_(pa.float32(), dim))
    if len(column) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(len(column), dim), dtype=np.float32)
