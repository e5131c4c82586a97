"""Staged writes to a store's Lance table: workers write fragment files, the driver commits a whole job at once.

A job is one Lance ``Update`` transaction: the rows it replaces or drops get deletion files in
the fragments that hold them, and the fragments the workers wrote are added, in the same new
table version. Until that commit the written files belong to no version, so a reader (or a
job killed before it) sees the table exactly as it was; the orphaned files are removed by
Lance's ``cleanup_old_versions``.

Written against URIs, not paths, so a table in object storage works the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, StoreError
from ..store._lance import TABLE_NAME, arrow_table, sql_quote

#: ids per ``IN (...)`` filter when finding and deleting rows.
ID_CHUNK = 1000


def import_lance():
    """``import lance`` (pylance), with the extra to install when it is missing."""
    try:
        import lance
    except ImportError:
        raise MissingDependencyError("Embedding with `engine` 'ray' needs Ray and pylance: "
                                     "pip install 'transferkit[ray]'.") from None
    return lance


def table_uri(store_path: str) -> str:
    """The URI of a store's Lance table (as LanceDB names it: ``<store>/<table>.lance``)."""
    return str(store_path).rstrip("/") + f"/{TABLE_NAME}.lance"


def write_fragments(uri: str, columns: dict[str, Any], vectors: np.ndarray, *, dim: int, storage_version: str | None,
                    storage_options: dict[str, str] | None = None) -> list[str]:
    """Write rows as fragment files of the table at ``uri`` without committing them; their metadata as JSON strings."""
    lance = import_lance()
    if not len(vectors):
        return []
    data = arrow_table(columns, vectors, dim)
    frags = lance.fragment.write_fragments(data, uri, schema=data.schema, data_storage_version=storage_version,
                                           storage_options=storage_options)
    return [json.dumps(f.to_json()) for f in frags]


def _fragments_holding(dataset, ids: Sequence[str]) -> dict[int, list[str]]:
    """``{fragment id: [ids]}`` of the rows with ``ids`` (a row address is fragment id << 32 | offset)."""
    found: dict[int, list[str]] = {}
    for start in range(0, len(ids), ID_CHUNK):
        chunk = ids[start:start + ID_CHUNK]
        tbl = dataset.to_table(columns=["id"], filter="id IN (" + ", ".join(sql_quote(i) for i in chunk) + ")",
                               with_row_address=True)
        for row_id, addr in zip(tbl.column("id").to_pylist(), tbl.column("_rowaddr").to_pylist()):
            found.setdefault(int(addr) >> 32, []).append(row_id)
    return found


def commit_job(uri: str, *, read_version: int, fragments: Iterable[str], delete_ids: Iterable[str],
               storage_options: dict[str, str] | None = None) -> int:
    """Delete ``delete_ids`` and add the written ``fragments`` (JSON metadata) in one commit on top of ``read_version``.

    A changed file's id is among ``delete_ids`` and its new row in ``fragments``, so readers see
    either its old row or its new one, never both or neither.

    Returns:
        the new table version.

    Raises:
        StoreError: another writer changed the table since ``read_version`` in a way that conflicts.
    """
    lance = import_lance()
    from lance.fragment import FragmentMetadata

    dataset = lance.dataset(uri, version=read_version, storage_options=storage_options)
    delete_ids = sorted(set(delete_ids))
    removed, updated = [], []
    for frag_id, ids in sorted(_fragments_holding(dataset, delete_ids).items()):
        fragment = dataset.get_fragment(frag_id)
        parts = [ids[s:s + ID_CHUNK] for s in range(0, len(ids), ID_CHUNK)]
        predicate = " OR ".join("id IN (" + ", ".join(sql_quote(i) for i in p) + ")" for p in parts)
        meta = fragment.delete(predicate)  # writes a deletion file only; nothing is visible until the commit
        if meta is None:
            removed.append(frag_id)
        else:
            updated.append(meta)
    new = [FragmentMetadata.from_json(f) for f in fragments]
    if not (removed or updated or new):
        return read_version
    op = lance.LanceOperation.Update(removed_fragment_ids=removed, updated_fragments=updated, new_fragments=new)
    try:
        done = lance.LanceDataset.commit(uri, op, read_version=read_version, storage_options=storage_options)
    except Exception as exc:  # lance's CommitConflictError is not importable under a stable name
        if "conflict" not in type(exc).__name__.lower() and "conflict" not in str(exc).lower():
            raise
        raise StoreError(f"The embedding store table {uri} was changed by another writer during this job, so nothing "
                         f"was committed. Run the embedding again.") from None
    return int(done.version)
