"""The stages of embedding files: read (decode threads) -> encode (the extractor's runner) -> write (the store).

Each stage is usable on its own, so a distributed runner can run read and encode on workers
and keep the one writer on the driver.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones import Preprocessing
from ..config import Settings, resolve_settings
from ..data.datasets import ImageFiles, decode_threads, prefetch_batches
from ..errors import ConfigError
from ..store.store import EmbeddingStore, normalize, sql_quote

log = logging.getLogger("transferkit")


def file_dataset(paths: Sequence[str | os.PathLike], pre: Preprocessing, *, exact: bool = False,
                 max_pixels: int | None) -> ImageFiles:
    """Files as uint8 crops with their store record (fingerprint, size, mtime, width, height), each read once."""
    return ImageFiles(paths, pre.resize_crop_transform(exact=exact), max_pixels=max_pixels, draft_size=pre.resize_size,
                      keep_gray=True, file_record=True, fast_jpeg=not exact)  # exact: PIL decodes and resizes, as torchvision


def read(dataset: ImageFiles, *, batch_size: int, num_workers: int | None = None) -> Iterator[tuple[Any, Any]]:
    """``(uint8 batch or None, (indices, records, bad))`` in order, decoded by threads a few batches ahead.

    Threads rather than worker processes: PIL decoding and resizing release the GIL, there is
    no process start-up, and nothing is forked from a process that may hold LanceDB's runtime.
    """
    if batch_size < 1:
        raise ConfigError(f"`batch_size` must be a positive integer; got {batch_size}.")
    workers = decode_threads() if num_workers is None else int(num_workers)
    for x, records, indices, bad in prefetch_batches(dataset, batch_size, workers):
        yield x, (indices, records, bad)


def encode(extractor, batches) -> Iterator[dict[str, Any]]:
    """Normalised embeddings of :func:`read`'s batches through ``extractor`` (an :class:`~transferkit.Extractor`)."""
    for y, (indices, records, bad) in extractor.encode_uint8(batches):
        if y is None:
            vectors = np.zeros((0, extractor.dim), dtype=np.float32)
        else:
            vectors = normalize(y.reshape(len(y), -1).float().cpu().numpy())
        yield {"index": indices, "vectors": vectors, "info": records, "bad": bad}


def embed_batches(extractor, paths: Sequence[str | os.PathLike], *, batch_size: int = 64, num_workers: int | None = None,
                  settings: Settings | None = None) -> Iterator[dict[str, Any]]:
    """Read and encode ``paths``: dicts with ``index``, ``vectors``, ``info`` (the store records) and ``bad``."""
    dataset = file_dataset([Path(p) for p in paths], extractor.preprocessing, exact=extractor.exact_resize,
                           max_pixels=resolve_settings(settings).max_pixels)
    yield from encode(extractor, read(dataset, batch_size=batch_size, num_workers=num_workers))


class StoreWriter:
    """Commits chunks of rows to the store on one background thread, one chunk at a time.

    The thread that feeds the model goes on while a chunk is written: a new store's first
    commit imports LanceDB and creates the table (about a second), during which one core
    idled when the commit ran inline. Commits stay in order, and :meth:`submit` waits for the
    previous one, so at most one chunk is in flight and its error surfaces at the next call.
    """

    def __init__(self, store: EmbeddingStore):
        self._store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transferkit-store")
        self._pending = None

    def _write(self, rows: list[dict[str, Any]], bad_ids: list[str]) -> None:
        self._store.upsert(rows)
        self._store.delete(bad_ids)

    def submit(self, rows: list[dict[str, Any]], bad_ids: list[str]) -> None:
        self.wait()
        self._pending = self._pool.submit(self._write, rows, bad_ids)

    def wait(self) -> None:
        """Block until the chunk in flight is committed; re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Let the chunk in flight finish (it is committed whole or not at all) and stop the thread.

        Only called after :meth:`wait` or while another error propagates, so a write error here is logged, not raised.
        """
        try:
            self.wait()
        except Exception as exc:  # noqa: BLE001 - the error already propagating is the one to report
            log.debug("store commit failed while stopping: %s", exc)
        finally:
            self._pool.shutdown(wait=True)


def refreshed_rows(store: EmbeddingStore, items: list[tuple[Any, os.stat_result, str]]) -> Iterator[list[dict[str, Any]]]:
    """The stored rows of files whose bytes did not change (moved folder, touched file), with their new metadata and
    their old vectors, a chunk at a time. ``items``: ``(ImageEntry, stat, fingerprint)`` per row."""
    by_id = {e.id: (e, st, fp) for e, st, fp in items}
    ids_all = list(by_id)
    for start in range(0, len(ids_all), 1000):
        ids = ids_all[start:start + 1000]
        rows = store.rows(where="id IN (" + ", ".join(sql_quote(i) for i in ids) + ")")
        for r in rows:
            e, st, fp = by_id[r["id"]]
            r.update(path=str(e.path), relpath=e.relpath, label=e.label, split=e.split, size=st.st_size, mtime=st.st_mtime_ns,
                     fingerprint=fp)
        yield rows


def refresh_rows(store: EmbeddingStore, items: list[tuple[Any, os.stat_result, str]]) -> None:
    """Rewrite the metadata of rows whose bytes did not change, keeping their vectors (see :func:`refreshed_rows`)."""
    for rows in refreshed_rows(store, items):
        store.upsert(rows)
