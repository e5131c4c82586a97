"""The approximate (faiss) index of a store: build, tune to a target recall, save, load.

Stores below :data:`IVF_MIN_VECTORS` get HNSW (M=32); larger ones IVF-Flat (~4 sqrt(N)
lists, trained on a sample), because HNSW over 1M vectors did not finish on 2 cores where
IVF built in 5.5 minutes. Stores whose vectors would not fit comfortably in memory get the
streamed IVF-PQ of :mod:`.streamed` (built and searched without loading the vectors). The search parameter (efSearch / nprobe) is tuned at build time to
the smallest value whose leave-one-out recall@10 reaches the target (0.95 by default).

The functions take a store-like object (``path``, ``dim``, ``version``, ``snapshot()``,
``ann_index_changed()``): an :class:`~transferkit.EmbeddingStore`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path, write_json_atomic
from ..errors import ConfigError, StoreError
from ..events import Callback, make_reporter
from . import streamed
from ._faiss import load as _faiss
from .search import exact_topk

log = logging.getLogger("transferkit")

INDEX_FILE = "ann.faiss"
INDEX_IDS_FILE = "ann_ids.npy"
INDEX_META_FILE = "ann.json"
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
#: ``kind="auto"`` uses HNSW below this many vectors and IVF-Flat from here on.
IVF_MIN_VECTORS = 100_000
INDEX_KINDS = ("auto", "hnsw", "ivf", "ivfpq")


class AnnIndex:
    """A faiss index (inner product) over a store's vectors, with the row ids it covers.

    Attributes:
        index: ``faiss.IndexHNSWFlat`` (small stores) or ``faiss.IndexIVFFlat`` (large ones).
        ids: row id per faiss position.
        info: ``kind``, ``recall_at_10``, ``store_version``, ``num_vectors``, the tuned search
            parameter (``ef_search`` or ``nprobe``).
    """

    def __init__(self, index, ids: np.ndarray, info: dict[str, Any]):
        self.index = index
        self.ids = ids
        self.info = info

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, scores)`` with ``-1`` positions where fewer than ``k`` were found."""
        set_search_param(self.index, self.info, k)
        scores, pos = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return pos, scores


def set_search_param(index, info: dict[str, Any], k: int) -> None:
    """Apply the tuned search parameter of ``info`` (``nprobe`` or ``ef_search``, at least ``k``) to ``index``."""
    if info.get("kind") == "faiss-ivf-flat-ip":
        _faiss().extract_index_ivf(index).nprobe = int(info.get("nprobe", 16))
    else:
        index.hnsw.efSearch = max(int(info.get("ef_search", HNSW_EF_SEARCH)), k)


def _drop_self(found: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Rows of ``found`` without the query's own position, cut to ``k`` (padded with -1)."""
    out = np.full((len(found), k), -1, dtype=np.int64)
    for r, (row, q) in enumerate(zip(found, queries)):
        kept = [int(i) for i in row if i != q][:k]
        out[r, : len(kept)] = kept
    return out


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(found, truth)]))


def check_target_recall(target_recall: float) -> None:
    if not 0.0 < target_recall <= 1.0:
        raise ConfigError(f"`target_recall` must be in (0, 1]; got {target_recall!r}.")


def describe_index(info: dict[str, Any]) -> str:
    """One line for people: kind, size, tuned parameter, measured recall, build and query time."""
    name = {"faiss-ivf-flat-ip": "IVF-Flat", "faiss-hnsw-ip": "HNSW"}.get(info["kind"], "")
    if not name:
        name = f"Streamed IVF-PQ ({info['pq_bytes']} bytes a vector, candidates re-ranked exactly)"
    param = f"nprobe {info['nprobe']}" if "nprobe" in info else f"efSearch {info['ef_search']}"
    return (f"{name} index over {info['num_vectors']} vectors ({param}): recall@10 {info['recall_at_10']:.3f} "
            f"vs exact ({info['recall_queries']} queries), built in {info['build_seconds']:.2f}s, "
            f"{info['query_ms']:.3f} ms/query")


def build_index(store: Any, *, kind: str = "auto", target_recall: float = 0.95, m: int = HNSW_M,
                ef_construction: int = HNSW_EF_CONSTRUCTION, num_queries: int = 200, seed: int = 0,
                progress: Callback | None = None, quiet: bool = False) -> dict[str, Any]:
    """Build the approximate index of ``store``, tune it to ``target_recall`` and save it in the store.

    See :func:`build_ann_index` for the arguments. Reports an ``index`` task and, at the end,
    a message with the result (:func:`describe_index`), or a warning when the largest search
    parameter stays below ``target_recall``.

    Returns:
        the index info (also written to ``ann.json``): ``kind``, ``recall_at_10``,
        ``num_vectors``, ``build_seconds``, ``query_ms``, ``store_version``, parameters.

    Raises:
        StoreError: the store is empty.
        ConfigError: bad ``kind`` or ``target_recall``.
    """
    reporter = make_reporter(progress, quiet=quiet)
    faiss = _faiss()
    n = len(store)
    if n == 0:
        raise StoreError(f"The store {store.path} is empty; embed images into it first.")
    if kind not in INDEX_KINDS:
        raise ConfigError(f"`kind` of the index must be one of {', '.join(INDEX_KINDS)}; got {kind!r}.")
    if kind == "ivfpq" or (kind == "auto" and n * store.dim * 4 >= streamed.STREAMED_MIN_BYTES):
        check_target_recall(target_recall)
        version = store.version
        with reporter.task("index", total=n, description="Building the streamed IVF-PQ index", unit="vec") as task:
            index, info = streamed.build_streamed(store, target_recall=target_recall, num_queries=num_queries, seed=seed,
                                                  task=task)
        info["store_version"] = version
        streamed.save_streamed(store, index, info, index_file=INDEX_FILE, meta_file=INDEX_META_FILE, ids_file=INDEX_IDS_FILE)
        return _built(store, info, target_recall, reporter)
    snap = store.snapshot()
    x = snap["vectors"]
    with reporter.task("index", total=None, description="Building the index"):
        index, info = build_ann_index(x, kind=kind, target_recall=target_recall, m=m, ef_construction=ef_construction,
                                      num_queries=num_queries, seed=seed)
        info["store_version"] = snap["version"]
        path = Path(store.path)
        with atomic_path(path / INDEX_FILE) as tmp:
            faiss.write_index(index, str(tmp))
        with atomic_path(path / INDEX_IDS_FILE) as tmp, open(tmp, "wb") as f:
            np.save(f, np.asarray(snap["id"].tolist(), dtype=str))
        # The JSON is written last: it names the store version the two files above belong to.
        write_json_atomic(path / INDEX_META_FILE, info)
    return _built(store, info, target_recall, reporter)


def _built(store: Any, info: dict[str, Any], target_recall: float, reporter) -> dict[str, Any]:
    store.ann_index_changed()
    if info["recall_at_10"] < target_recall:
        param = "nprobe" if "nprobe" in info else "ef_search"
        reporter.warning(f"The index reaches recall@10 {info['recall_at_10']:.3f}, below the target {target_recall:.2f}, "
                         f"at its largest {param} ({info[param]}). Hint: use exact search for exact results.")
    reporter.message(describe_index(info), **info)
    return info


def build_ann_index(x: np.ndarray, *, kind: str = "auto", target_recall: float = 0.95, m: int = HNSW_M,
                    ef_construction: int = HNSW_EF_CONSTRUCTION, num_queries: int = 200, seed: int = 0):
    """Build a faiss inner-product index over the rows of ``x`` and tune its search parameter.

    The search parameter (HNSW ``efSearch`` or IVF ``nprobe``) is the smallest whose recall@10
    against exact search, measured on ``num_queries`` rows of ``x`` used as queries, reaches
    ``target_recall`` (or the largest tried, when none does).

    Args:
        x: ``(N, D)`` float32, L2-normalised rows.
        kind: ``auto`` (HNSW below :data:`IVF_MIN_VECTORS` rows, IVF-Flat above), ``hnsw`` or ``ivf``.
        target_recall: recall@10 the tuning aims for.
        m, ef_construction: HNSW build parameters.
        num_queries: rows sampled as queries for the recall measurement.
        seed: sampling seed.

    Returns:
        ``(faiss_index, info)``; ``info`` has ``kind``, the tuned parameter, ``recall_at_10``,
        ``target_recall``, ``build_seconds``, ``query_ms``, ``num_vectors``.
    """
    if kind not in INDEX_KINDS or kind == "ivfpq":
        raise ConfigError(f"`kind` of an in-memory index must be auto, hnsw or ivf; got {kind!r} "
                          "(the streamed IVF-PQ is built from a store: `build_index(store, kind='ivfpq')`).")
    check_target_recall(target_recall)
    faiss = _faiss()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, dim = x.shape
    if kind == "auto":
        kind = "ivf" if n >= IVF_MIN_VECTORS else "hnsw"
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    if kind == "ivf":
        # ~4 sqrt(N) lists: at 1M vectors a probe scans ~250 vectors, so the nprobe that
        # reaches the target recall stays far cheaper than the exact scan.
        nlist = int(min(8192, max(16, round(4 * np.sqrt(n)))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        index.cp.max_points_per_centroid = 40
        index.train(x[rng.choice(n, size=min(n, 40 * nlist), replace=False)])
        index.add(x)
        info: dict[str, Any] = {"kind": "faiss-ivf-flat-ip", "nlist": nlist}
        candidates = [p for p in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512) if p <= nlist] or [nlist]
        param = "nprobe"
    else:
        index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(x)
        info = {"kind": "faiss-hnsw-ip", "m": m, "ef_construction": ef_construction}
        candidates = [16, 32, 64, 128, 256, 512]
        param = "ef_search"
    build_s = time.perf_counter() - t0
    sample = rng.choice(n, size=min(num_queries, n), replace=False)
    k = min(10, n - 1) if n > 1 else 1
    # Leave-one-out: a stored vector always finds itself, which would flatter the recall of
    # new queries; the query's own row is dropped from both result lists.
    exact_i = _drop_self(exact_topk(x, x[sample], k + 1)[0], sample, k)
    chosen = None
    for value in candidates:
        info[param] = value
        set_search_param(index, info, k + 1)
        t1 = time.perf_counter()
        _, ann_i = index.search(x[sample], k + 1)
        query_ms = (time.perf_counter() - t1) / len(sample) * 1e3
        chosen = (value, _recall(_drop_self(ann_i, sample, k), exact_i), query_ms)
        if chosen[1] >= target_recall:
            break
    value, recall, query_ms = chosen
    info.update({param: value, "target_recall": target_recall, "num_vectors": int(n), "recall_at_10": round(recall, 4),
                 "recall_queries": int(len(sample)), "build_seconds": round(build_s, 3), "query_ms": round(query_ms, 4)})
    return index, info


def load_index(store: Any):
    """The store's index if one was built and still matches the store; ``None`` otherwise (with a warning if stale).

    An :class:`AnnIndex`, or a :class:`~transferkit.store.streamed.StreamedIndex` (``streamed`` true) for IVF-PQ.
    """
    path = Path(store.path)
    meta_path = path / INDEX_META_FILE
    if not meta_path.exists():
        return None
    try:
        info = json.loads(meta_path.read_text(encoding="utf-8"))
        if info.get("kind") == streamed.KIND:
            if info.get("store_version") != store.version:
                log.warning("The ANN index of %s is out of date (the store changed since it was built); using exact "
                            "search. Hint: rebuild the index.", path)
                return None
            return streamed.load_streamed(path / INDEX_FILE, info, store)
        faiss = _faiss()
        index = faiss.read_index(str(path / INDEX_FILE))
        ids = np.load(path / INDEX_IDS_FILE, allow_pickle=False)
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("Ignoring the unreadable ANN index in %s (%s); using exact search. Hint: rebuild the index.",
                    path, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
        return None
    if info.get("store_version") != store.version or index.ntotal != len(ids) or index.d != store.dim:
        log.warning("The ANN index of %s is out of date (the store changed since it was built); using exact search. "
                    "Hint: rebuild the index.", path)
        return None
    return AnnIndex(index, ids, info)


def index_info(store: Any) -> dict[str, Any] | None:
    """The saved index info (``ann.json``) or ``None``."""
    p = Path(store.path) / INDEX_META_FILE
    try:
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None
    except (OSError, ValueError):
        return None
