"""Follow a store that another process or thread is writing to.

An open :class:`~transferkit.EmbeddingStore` reads the table version it opened (LanceDB checks
for newer commits only when asked), so every read of one instance sees one complete commit.
A long-lived reader (a server) asks :func:`refresh_store` for the newest instance instead of
moving an instance that other threads are reading from to a newer version.
"""

from __future__ import annotations

from ._lance import table_errors
from .store import EmbeddingStore

__all__ = ["latest_version", "refresh_store"]


class _Probe:
    """Gives :func:`table_errors` the ``uri`` it names in messages."""

    def __init__(self, store: EmbeddingStore):
        self.uri = store.uri
        self.store = store

    @table_errors("read")
    def latest(self) -> int:
        versions = self.store.table.list_versions()
        numbers = [int(v["version"] if isinstance(v, dict) else getattr(v, "version", v)) for v in versions]
        return max(numbers, default=self.store.version)


def latest_version(store: EmbeddingStore) -> int:
    """The newest committed version of ``store``'s table (``store`` itself keeps reading its own version).

    Raises:
        CorruptStoreError: the table files cannot be read.
    """
    return _Probe(store).latest()


def refresh_store(store: EmbeddingStore) -> EmbeddingStore:
    """``store`` when nothing was committed since it was opened, else a newly opened instance at the newest commit.

    The instance returned is never moved to another version afterwards: a caller that keeps it
    for one request reads one consistent commit (never a half-written store), whatever is
    written meanwhile.

    Raises:
        StoreError, CorruptStoreError: the store is gone or damaged.
    """
    if latest_version(store) == store.version:
        return store
    return EmbeddingStore.open(store.uri)
