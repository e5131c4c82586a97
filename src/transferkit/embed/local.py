"""The local runner: mirror an image folder into an embedding store in this process.

Only new or changed files are embedded, deleted files are dropped, and every chunk is
committed as it is produced, so a killed run is completed by running it again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings, resolve_settings
from ..data.folders import scan_folder
from ..errors import ConfigError, ModelMismatchError
from ..events import Callback, make_reporter
from ..store.store import EmbeddingStore
from ..store.writer_lock import WriterLock
from .extractor import Extractor
from .plan import PLAN_COLUMNS, plan_embedding
from .stages import StoreWriter, refresh_rows

log = logging.getLogger("transferkit")


@dataclass
class EmbedReport:
    """What :func:`embed_folder` did.

    Attributes:
        added, updated, removed, unchanged: row counts.
        skipped: unreadable files as ``{path: reason}``.
        num_rows: rows in the store afterwards.
        seconds: wall time; ``images_per_second`` over the embedded images.
        store: the store folder.
        inference: backend and precision used (see :attr:`Extractor.inference_info`).
    """

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    num_rows: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    store: str = ""
    inference: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "updated": self.updated, "removed": self.removed, "unchanged": self.unchanged,
                "skipped": len(self.skipped), "skipped_files": dict(self.skipped), "num_rows": self.num_rows,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 1), "store": self.store,
                "inference": dict(self.inference)}


def inference_record(info: dict[str, Any]) -> dict[str, Any]:
    """What a store records of how its vectors were made (and compares on later runs): backend and precision."""
    return {"backend": info.get("backend"), "precision": info.get("precision")}


def same_vectors(recorded: dict[str, Any], used: dict[str, Any]) -> bool:
    """Whether vectors made as ``used`` may join a store recorded as ``recorded``: the same precision, and for a
    reduced one the same backend (fp32 vectors of either backend agree within the conversion check)."""
    if recorded.get("precision") != used.get("precision"):
        return False
    return used.get("precision") == "fp32" or recorded.get("backend") == used.get("backend")


def start_job(extractor: Extractor, data: str | os.PathLike, store_path: str | os.PathLike, *, settings: Settings | None,
              progress: Callback | bool | None, quiet: bool):
    """What every engine does first: ``(settings, reporter, entries, data_root, store, recorded)``: the folder's
    entries, the store (created if needed) and the backend/precision it records, pinned on ``extractor``."""
    settings = resolve_settings(settings)
    reporter = make_reporter(None if isinstance(progress, bool) else progress, quiet=quiet or progress is False)
    entries = scan_folder(data)
    data_root = str(Path(data).resolve())
    store = EmbeddingStore.open_or_create(store_path, model_id=extractor.model_id, source=extractor.source,
                                          extra={"data_root": data_root})
    recorded = store.meta.get("inference")
    if recorded:
        extractor.pin(recorded, where=f"Store {store.uri}")
    return settings, reporter, entries, data_root, store, recorded


def embed_folder(extractor: Extractor, data: str | os.PathLike, store_path: str | os.PathLike, *, batch_size: int = 64,
                 quiet: bool = False, progress: Callback | bool | None = None, num_workers: int | None = None,
                 chunk_size: int | None = None, settings: Settings | None = None) -> EmbedReport:
    """Mirror the images under ``data`` into the store at ``store_path`` (created if needed).

    Only new or changed files are embedded (size + mtime, then a digest of the bytes, decide
    what changed); rows of deleted files are dropped; unreadable files are skipped, listed
    and warned about. Rows are committed every ``chunk_size`` images, so a killed run is
    completed by running it again, with no duplicates. The backend and precision of the
    first commit are recorded in the store; later runs with ``auto`` use the same.

    Args:
        extractor: the model (see :class:`Extractor`).
        data: the image folder (see :func:`~transferkit.data.folders.scan_folder` for layouts).
        store_path: the store folder.
        batch_size: images per forward pass.
        quiet: no progress rendering (warnings still go to the ``transferkit`` logger).
        progress: a callback receiving :class:`~transferkit.events.Event` objects; ``True`` or
            ``None``: the default rendering (a bar on stderr) unless ``quiet``; ``False``: none.
        num_workers: decoding threads (default: :func:`~transferkit.data.datasets.decode_threads`).
        chunk_size: images per commit (default ``max(256, 4 * batch_size)``).
        settings: the pixel limit (``None``: the environment's settings).

    Raises:
        DataNotFoundError / DataError: bad ``data``.
        ConfigError: ``batch_size`` is not positive.
        StoreError: the store cannot take these embeddings.
        ModelMismatchError: the store holds another model's embeddings, or ones made with
            another explicit backend or precision.
    """
    t0 = time.perf_counter()
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"`batch_size` must be a positive integer; got {batch_size}.")
    settings, reporter, entries, data_root, store, recorded = start_job(extractor, data, store_path, settings=settings,
                                                                        progress=progress, quiet=quiet)
    with WriterLock(store):  # held from the plan to the last commit: two jobs would both insert a new file's row
        if store.meta.get("data_root") != data_root:
            store.update_meta(data_root=data_root)
        report = EmbedReport(store=store.uri)
        # A store created just now has no rows, and reading them would import LanceDB and open the table (0.5-1.0 s)
        # before the first image; its table is made by the first commit, while the model runs.
        existing = {} if store.is_new else {r["id"]: r for r in store.rows(columns=list(PLAN_COLUMNS))}
        plan = plan_embedding(entries, existing)
        report.unchanged = len(plan.unchanged)
        if plan.refresh:
            refresh_rows(store, plan.refresh)
            report.unchanged += len(plan.refresh)
        report.removed = store.delete(plan.stale)

        chunk_size = chunk_size or max(256, 4 * batch_size)
        todo = plan.todo
        embedded = 0
        t_embed = time.perf_counter()
        rows: list[dict[str, Any]] = []
        bad_ids: list[str] = []
        writer = StoreWriter(store)

        def commit() -> None:
            nonlocal embedded, recorded
            if rows and not recorded:  # the first vectors: record how they were made, or check it
                recorded = inference_record(extractor.inference_info)
                store.update_meta(inference=recorded, engine="local")  # which engine made the first vectors (or "ray")
            elif rows and not same_vectors(recorded, inference_record(extractor.inference_info)):
                used = inference_record(extractor.inference_info)
                raise ModelMismatchError(f"Store {store.uri} holds embeddings made with {recorded['backend']} "
                                         f"{recorded['precision']}, but this run fell back to {used['backend']} "
                                         f"{used['precision']}. Embed into a new store.")
            writer.submit(list(rows), list(bad_ids))  # waits for the previous commit first (raising its error)
            embedded += len(rows)
            for r in rows:
                if plan.is_update(r["id"]):
                    report.updated += 1
                else:
                    report.added += 1
            rows.clear()
            bad_ids.clear()

        task = reporter.task("embed", total=len(todo), description="Embedding") if todo else None
        try:
            if task is not None:
                task.__enter__()
            # one decoding pipeline over all the files, with the rows committed every `chunk_size`
            # images (on the writer's thread, so the model is fed meanwhile) and a killed run keeps what it did
            for batch in extractor.iter_files([e.path for e in todo], batch_size=batch_size, num_workers=num_workers,
                                              settings=settings):
                for pos, vec, info in zip(batch["index"], batch["vectors"], batch["info"]):
                    e = todo[pos]
                    rows.append({"id": e.id, "path": str(e.path), "relpath": e.relpath, "label": e.label, "split": e.split,
                                 **info, "vector": vec})
                for pos, reason in batch["bad"]:
                    e = todo[pos]
                    report.skipped[str(e.path)] = reason
                    if plan.is_update(e.id):
                        bad_ids.append(e.id)  # its old embedding no longer describes the file
                if task is not None:
                    n, dt = len(batch["index"]) + len(batch["bad"]), time.perf_counter() - t_embed
                    task.advance(n, images_per_second=round((task.completed + n) / dt, 1) if dt > 0 else 0.0)
                if len(rows) + len(bad_ids) >= chunk_size:
                    commit()
            if rows or bad_ids:
                commit()
            writer.wait()
        finally:
            writer.close()
            if task is not None:
                task.end()
        for path, reason in report.skipped.items():
            log.warning("Skipped unreadable image %s: %s", path, reason)
        report.num_rows = len(store)
        report.seconds = time.perf_counter() - t0
        dt = time.perf_counter() - t_embed
        report.images_per_second = embedded / dt if embedded and dt > 0 else 0.0
        report.inference = extractor.inference_info
        return report
