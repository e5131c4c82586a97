"""The Ray runner: mirror an image folder into an embedding store with Ray Data, committed as one transaction.

The driver makes the incremental plan (as the local runner does), Ray Data decodes the files
in tasks and embeds them in a pool of actors that each hold one extractor, tasks write the
vectors as Lance fragments, and the driver commits the whole job at once (see
:mod:`.lance_fragments`). The store is the same as a local run's: either engine reads,
extends and serves the other's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import ConfigError, MissingDependencyError, ModelMismatchError, TransferKitError
from ..events import Callback
from ..store.store import EmbeddingStore
from .lance_fragments import commit_job, import_lance, table_uri, write_fragments
from .ray_stages import EmbedActor, decode_batch, write_batch

log = logging.getLogger("transferkit")

#: Object store of a Ray this runner starts (decoded 224-px crops are 150 KB each; Ray Data applies backpressure).
LOCAL_OBJECT_STORE_BYTES = 512 * 2**20


def import_ray():
    """``import ray`` and Ray Data, with the extra to install when they are missing."""
    try:
        import ray
        import ray.data  # noqa: F401 - the pipeline needs it
    except ImportError:
        raise MissingDependencyError("Embedding with `engine` 'ray' needs Ray: pip install 'transferkit[ray]'.") from None
    import_lance()
    return ray


def _connect(ray, address: str | None, workers: int, quiet: bool) -> bool:
    """Join ``address`` (or a Ray this process already runs), else start a local one; True when started here."""
    if ray.is_initialized():
        return False
    with warnings.catch_warnings():
        # Ray starts its processes with fork+exec; lance and lancedb (loaded here) warn in the child before the exec
        warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message="lance is not fork-safe", category=UserWarning)
        _init(ray, address, workers, quiet)
    return True


def _init(ray, address: str | None, workers: int, quiet: bool) -> None:
    if address:
        ray.init(address=address, log_to_driver=not quiet, logging_level=logging.WARNING)
        return
    # logical CPUs: one per actor plus room for the decoding tasks, even on a machine with fewer cores
    ray.init(num_cpus=max(os.cpu_count() or 1, workers + 1), object_store_memory=LOCAL_OBJECT_STORE_BYTES,
             include_dashboard=False, log_to_driver=not quiet, logging_level=logging.WARNING)


def _resources(ray, workers: int, gpus_per_worker: float) -> tuple[float, float]:
    """CPUs per actor and per decode/write task: an actor gets a core unless the cluster has too few to keep one for decoding."""
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    actor = 1.0 if gpus_per_worker else min(1.0, cpus / (workers + 1))
    return actor, max(0.1, min(1.0, actor / 2))


def _run_pipeline(ray, todo, recipe: dict[str, Any], *, uri: str, dim: int, storage_version: str | None, workers: int,
                  gpus_per_worker: float, batch_size: int, fragment_rows: int, max_pixels: int | None, task):
    """Decode, embed and write ``todo``; yields the write stage's batches as they finish."""
    from ray.data import ActorPoolStrategy

    actor_cpus, task_cpus = _resources(ray, workers, gpus_per_worker)
    items = [{"id": e.id, "path": str(e.path), "relpath": e.relpath, "label": e.label, "split": e.split} for e in todo]
    num_batches = max(1, -(-len(items) // batch_size))
    ds = ray.data.from_items(items, override_num_blocks=num_batches)
    pre = recipe["model_id"]["preprocessing"]
    ds = ds.map_batches(decode_batch, batch_size=batch_size, batch_format="numpy", num_cpus=task_cpus,
                        fn_kwargs={"preprocessing": pre, "exact": recipe["resize"] == "pil-exact", "max_pixels": max_pixels})
    ds = ds.map_batches(EmbedActor, batch_size=batch_size, batch_format="numpy",
                        compute=ActorPoolStrategy(size=min(workers, num_batches)), num_cpus=actor_cpus,
                        num_gpus=gpus_per_worker or None, fn_constructor_kwargs={"recipe": recipe, "expected_items": len(items)})
    # Ray Data restarts a killed actor and retries its batch (max_restarts=-1, max_task_retries=-1 by default);
    # a task retried after writing leaves orphan fragment files that no commit references
    ds = ds.map_batches(write_batch, batch_size=fragment_rows, batch_format="numpy", num_cpus=task_cpus,
                        fn_kwargs={"uri": uri, "dim": dim, "storage_version": storage_version})
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        if task is not None:
            task.advance(len(batch["id"]))
        yield batch


@contextlib.contextmanager
def _quiet_ray_data():
    """No Ray Data progress bars or execution log lines: the reporter renders the job's progress (errors still show)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.print_on_execution_start
    ray_log = logging.getLogger("ray.data")
    level = ray_log.level
    ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
    ray_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved
        ray_log.setLevel(level)


def _unwrap(exc: BaseException) -> BaseException:
    """The transferkit error a worker raised, out of Ray's wrappers (else ``exc``).

    A task's error keeps its cause; an actor whose constructor raised (e.g. the weights changed
    since the recipe was made) dies with the cause's traceback as text only, rebuilt from it here.
    """
    from .. import errors

    seen: BaseException | None = exc
    for _ in range(5):
        seen = getattr(seen, "cause", None) or seen.__cause__
        if seen is None:
            break
        if isinstance(seen, TransferKitError):
            return seen
    found = re.findall(r"transferkit\.errors\.(\w+): ([^\n]+)", str(exc))
    cls = getattr(errors, found[-1][0], None) if found else None
    if isinstance(cls, type) and issubclass(cls, TransferKitError):
        return cls(found[-1][1].strip())
    return exc


def _agreed_inference(infos: set[str], recorded: dict[str, Any] | None, store) -> dict[str, Any]:
    """The one backend/precision decision every actor made (and the store's, if it has one)."""
    from ..embed.local import inference_record, same_vectors

    decided = [json.loads(i) for i in sorted(infos)]
    used = inference_record(decided[0])
    if any(not same_vectors(used, inference_record(d)) for d in decided[1:]):  # e.g. one actor's bf16 check failed
        records = sorted({json.dumps(inference_record(d), sort_keys=True) for d in decided})
        raise ModelMismatchError(f"The Ray workers embedded with different backends or precisions ({', '.join(records)}), "
                                 f"so nothing was committed to {store.uri}. Set `backend` and `precision` explicitly.")
    if recorded and not same_vectors(recorded, used):
        raise ModelMismatchError(f"Store {store.uri} holds embeddings made with {recorded['backend']} {recorded['precision']}, "
                                 f"but the Ray workers used {used['backend']} {used['precision']}. Embed into a new store.")
    return decided[0]


@dataclass
class _Job:
    """What the workers did, gathered on the driver: the fragments to commit and the rows to delete."""

    delete_ids: set[str]
    fragments: list[str] = field(default_factory=list)
    embedded: list[str] = field(default_factory=list)
    infos: set[str] = field(default_factory=set)
    skipped: dict[str, str] = field(default_factory=dict)

    def take(self, batch: dict[str, Any], plan) -> None:
        """Add a batch of the write stage's output (see :func:`~.ray_stages.write_batch`)."""
        self.fragments += [f for cell in batch["fragments"] if cell for f in json.loads(cell)]
        for row_id, ok, path, reason, info in zip(batch["id"], batch["ok"], batch["path"], batch["reason"], batch["inference"]):
            row_id = str(row_id)
            if ok:
                self.embedded.append(row_id)
                self.infos.add(str(info))
            else:
                self.skipped[str(path)] = str(reason)
            if plan.is_update(row_id):
                self.delete_ids.add(row_id)  # replaced by its new row, or dropped: the file is unreadable now


def embed_folder_ray(extractor, data: str | os.PathLike, store_path: str | os.PathLike, *, address: str | None = None,
                     num_workers: int = 2, gpus_per_worker: float = 0, batch_size: int = 64, fragment_rows: int = 512,
                     quiet: bool = False, progress: Callback | bool | None = None, settings: Settings | None = None):
    """:func:`~transferkit.embed_folder` on Ray: the same plan, report and store, committed in one transaction.

    A job killed before its commit leaves the store as it was; running it again embeds what is
    still missing. Unreadable files are skipped and reported as locally.

    Args:
        extractor: an :class:`~transferkit.Extractor` with a :attr:`~transferkit.Extractor.recipe` (a registered
            backbone or a trained run: each worker rebuilds it, so the weights must be readable there).
        data: the image folder; its files must be readable at the same paths on every worker.
        store_path: the store folder.
        address: a Ray cluster (``"auto"``, ``"ray://host:10001"``, ...); default: the Ray this process
            already joined, else a new local one on this machine.
        num_workers: embedding actors, each holding one extractor.
        gpus_per_worker: GPUs per actor (0: CPU actors).
        batch_size: images per forward pass.
        fragment_rows: rows per written fragment (at most); progress advances a fragment at a time.
        quiet, progress, settings: as for :func:`~transferkit.embed_folder`.

    Raises:
        MissingDependencyError: Ray or pylance is not installed.
        ConfigError: a bad option, or an extractor made from an in-memory model.
        ModelMismatchError, StoreError, DataError: as for :func:`~transferkit.embed_folder`.
    """
    from ..embed.local import EmbedReport, inference_record, start_job
    from ..embed.plan import PLAN_COLUMNS, plan_embedding
    from ..store.writer_lock import WriterLock

    t0 = time.perf_counter()
    for name, value in (("num_workers", num_workers), ("batch_size", batch_size), ("fragment_rows", fragment_rows)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"`{name}` must be a positive integer; got {value!r}.")
    if gpus_per_worker < 0:
        raise ConfigError(f"`gpus_per_worker` must be >= 0; got {gpus_per_worker!r}.")
    ray = import_ray()
    settings, reporter, entries, data_root, store, recorded = start_job(extractor, data, store_path, settings=settings,
                                                                        progress=progress, quiet=quiet)
    with WriterLock(store):  # held from the plan to the commit: two jobs would both insert a new file's row
        # the workers' device follows the resources they are given, not the driver's machine
        recipe = {**extractor.recipe, "device": "cuda" if gpus_per_worker else "cpu"}
        report = EmbedReport(store=store.uri)
        lance = import_lance()
        store.table  # noqa: B018 - a new store's (empty) table, for the workers' fragments to belong to
        # absolute: workers on other machines (or in other folders) write the fragments by this name
        uri = table_uri(store.uri if store.location.remote else str(Path(store.uri).resolve()))
        dataset = lance.dataset(uri)
        read_version, storage_version = int(dataset.version), dataset.data_storage_version
        # the plan reads the version the job commits on top of (the writer lock keeps other jobs out meanwhile)
        existing = {r["id"]: r for r in dataset.to_table(columns=list(PLAN_COLUMNS)).to_pylist()}
        plan = plan_embedding(entries, existing)
        report.unchanged = len(plan.unchanged) + len(plan.refresh)
        t_embed = time.perf_counter()
        job = _Job(delete_ids=set(plan.stale))
        if plan.todo:
            started = _connect(ray, address, num_workers, quiet)
            t_embed = time.perf_counter()  # images/s from here: the actors' start-up counts, as the model's build does locally
            task = reporter.task("embed", total=len(plan.todo), description="Embedding on Ray")
            try:
                task.__enter__()
                with _quiet_ray_data():
                    for batch in _run_pipeline(ray, plan.todo, recipe, uri=uri, dim=store.dim, storage_version=storage_version,
                                               workers=num_workers, gpus_per_worker=gpus_per_worker, batch_size=batch_size,
                                               fragment_rows=fragment_rows, max_pixels=settings.max_pixels, task=task):
                        job.take(batch, plan)
            except Exception as exc:
                cause = _unwrap(exc)
                if cause is not exc:
                    raise cause from None
                raise
            finally:
                task.end()
                if started:
                    ray.shutdown()
        embedded, fragments, delete_ids = job.embedded, job.fragments, job.delete_ids
        report.skipped = job.skipped
        new_record = None  # written only once the vectors are committed: a failed commit must not pin later runs to it
        if embedded:
            info = _agreed_inference(job.infos, recorded, store)
            report.inference = info
            if not recorded:
                new_record = inference_record(info)
        if plan.refresh:  # bytes unchanged, path or label moved: rewritten rows with their vectors, in the same commit
            fragments += _refreshed_fragments(store, plan.refresh, uri=uri, storage_version=storage_version)
            delete_ids.update(e.id for e, _, _ in plan.refresh)
        if store.meta.get("data_root") != data_root:
            store.update_meta(data_root=data_root)
        if fragments or delete_ids:
            reporter.message("Committing the Ray job", stage="commit", fragments=len(fragments), deletes=len(delete_ids))
            commit_job(uri, read_version=read_version, fragments=fragments, delete_ids=delete_ids)
            store = EmbeddingStore.open(store.uri)  # the open table still reads the version before the commit
        if new_record:
            store.update_meta(inference=new_record, engine="ray")
        report.added = sum(1 for i in embedded if not plan.is_update(i))
        report.updated = len(embedded) - report.added
        report.removed = len(plan.stale)
        for path, reason in report.skipped.items():
            log.warning("Skipped unreadable image %s: %s", path, reason)
        report.num_rows = len(store)
        report.seconds = time.perf_counter() - t0
        dt = time.perf_counter() - t_embed
        report.images_per_second = len(embedded) / dt if embedded and dt > 0 else 0.0
        return report


def _refreshed_fragments(store, items, *, uri: str, storage_version: str | None) -> list[str]:
    """Fragments of the rows whose file moved or was touched: the new metadata, the stored vector."""
    import numpy as np

    from ..embed.stages import refreshed_rows

    out: list[str] = []
    for rows in refreshed_rows(store, items):
        columns = {k: [r[k] for r in rows] for k in rows[0] if k != "vector"} if rows else {}
        vectors = np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), store.dim)
        out += write_fragments(uri, columns, vectors, dim=store.dim, storage_version=storage_version)
    return out
