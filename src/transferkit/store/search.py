"""Cosine-similarity search: exact (numpy), approximate (faiss HNSW) and retrieval evaluation.

Why faiss HNSW and not LanceDB's own index (measured on this 2-core CPU machine, 20,000
clustered unit vectors of dimension 256 in 100 clusters, 200 single queries, top 10)::

    method                              build   ms/query  recall@10
    exact numpy (one query)              -       0.54      1.000
    faiss HNSW M=32 efSearch=64          1.1 s   0.09      0.993
    faiss HNSW M=32 efSearch=128         1.1 s   0.14      1.000
    lance IVF_PQ nprobes=20 refine=10   11.4 s   6.1       0.966
    lance IVF_HNSW_SQ nprobes=20         3.0 s   5.2       0.954
    lance IVF_FLAT nprobes=20            0.6 s   4.6       1.000

LanceDB's per-query overhead (query planning, Arrow round trip) is larger than an exact
numpy scan at this size, so search with an index uses faiss, persisted next to the table;
LanceDB stays the system of record for rows and metadata. Stores below 100k vectors get
HNSW (M=32); larger ones IVF-Flat (nlist ~ sqrt(N), trained on a sample), because building
HNSW over millions of vectors takes too long on a few cores. Either way the search
parameter (efSearch / nprobe) is tuned at build time to the smallest value whose measured
recall@10 reaches the target (0.95 by default).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._io import atomic_path, write_json_atomic
from ..errors import ConfigError, StoreError

if TYPE_CHECKING:  # pragma: no cover
    from .store import EmbeddingStore

log = logging.getLogger("transferkit")

INDEX_FILE = "ann.faiss"
INDEX_IDS_FILE = "ann_ids.npy"
INDEX_META_FILE = "ann.json"
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
# Bound the (queries x database) similarity block to ~256 MB of float32.
_BLOCK_ELEMENTS = 64 * 1024 * 1024
# From this many scores (queries x rows) on, exact_topk uses torch.topk.
_TORCH_TOPK_ELEMENTS = 4 * 1024 * 1024


# ---------------------------------------------------------------------- spec API
def cosine_similarity(vec1, vec2) -> float:
    """Cosine similarity of two vectors, in [-1, 1].

    Raises:
        ConfigError: different lengths, not 1-D, or a zero vector (similarity undefined).
    """
    a = np.asarray(vec1, dtype=np.float64).ravel()
    b = np.asarray(vec2, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ConfigError(f"cosine_similarity needs vectors of the same length; got {a.size} and {b.size}.")
    norm1, norm2 = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if norm1 == 0.0 or norm2 == 0.0:
        raise ConfigError("cosine_similarity is undefined for a zero vector; got a vector of all zeros.")
    return float(np.clip(np.dot(a, b) / (norm1 * norm2), -1.0, 1.0))


class SemanticSearch:
    """Exact top-k cosine search over an in-memory matrix (the spec's searcher, batched and validated).

    Args:
        embeddings_db: ``(N, D)`` matrix of database embeddings (normalised here).
        labels_db: ``(N,)`` labels or identifiers, returned alongside by callers.

    Raises:
        ConfigError: not a 2-D matrix, or ``labels_db`` of another length.
    """

    def __init__(self, embeddings_db, labels_db=None):
        from .store import normalize

        emb = np.asarray(embeddings_db, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ConfigError(f"embeddings_db must be a non-empty (N, D) matrix; got shape {emb.shape}.")
        if labels_db is not None and len(labels_db) != emb.shape[0]:
            raise ConfigError(f"labels_db has {len(labels_db)} entries but embeddings_db has {emb.shape[0]} rows; pass one label per row.")
        self.embeddings_db = normalize(emb)
        self.labels_db = np.asarray(labels_db) if labels_db is not None else None

    def search(self, query_embedding, top_k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """The ``top_k`` rows most similar to the query.

        Args:
            query_embedding: ``(D,)`` (or ``(1, D)``) query vector; need not be normalised.
            top_k: number of results (capped at N).

        Returns:
            ``(indices, similarities)``, best first.

        Raises:
            ConfigError: zero vector, wrong dimension, ``top_k`` < 1.
        """
        q = check_query(query_embedding, self.embeddings_db.shape[1])
        idx, sims = exact_topk(self.embeddings_db, q[None, :], top_k)
        return idx[0], sims[0]


# ---------------------------------------------------------------------- exact top-k
def check_query(query, dim: int) -> np.ndarray:
    """Validate one query vector and return it L2-normalised (float32, 1-D).

    Raises:
        ConfigError: wrong dimension, not finite, or all zeros.
    """
    q = np.asarray(query, dtype=np.float32)
    if q.ndim == 2 and q.shape[0] == 1:
        q = q[0]
    if q.ndim != 1 or q.shape[0] != dim:
        raise ConfigError(f"The query has shape {tuple(q.shape)} but the database vectors have dimension {dim}. "
                          f"Embed the query with the same model as the database.")
    if not np.all(np.isfinite(q)):
        raise ConfigError("The query vector contains NaN or infinity; check the image and the model.")
    norm = float(np.linalg.norm(q))
    if norm == 0.0:
        raise ConfigError("The query is a zero vector; cosine similarity is undefined. Use a non-blank query image or vector.")
    return q / norm


def exact_topk(db: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (cosine for normalised rows), in blocks of queries.

    Args:
        db: ``(N, D)`` float32 database.
        queries: ``(Q, D)`` float32 queries.
        k: results per query (capped at N).

    Returns:
        ``(indices (Q, k) int64, scores (Q, k) float32)``, best first; equal scores are
        ordered by index.
    """
    if k < 1:
        raise ConfigError(f"top_k must be a positive integer; got {k}.")
    db = np.ascontiguousarray(db, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = db.shape[0]
    k = min(k, n)
    nq = queries.shape[0]
    out_i = np.empty((nq, k), dtype=np.int64)
    out_s = np.empty((nq, k), dtype=np.float32)
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    if nq * n >= _TORCH_TOPK_ELEMENTS:
        # Large batches: torch's multi-threaded topk is 3-6x faster than numpy's
        # argpartition over the (Q, N) score block (benchmarks/bench_search.py); small ones
        # stay in numpy so a single CLI query does not pay torch's import.
        import torch

        tdb = torch.from_numpy(db)
        for start in range(0, nq, block):
            sims = torch.from_numpy(queries[start:start + block]) @ tdb.T
            top_s, top_i = torch.topk(sims, k, dim=1, sorted=True)
            top_i, top_s = top_i.numpy(), top_s.numpy()
            order = np.lexsort((top_i, -top_s), axis=1)  # equal scores by index, as below
            out_i[start:start + block] = np.take_along_axis(top_i, order, axis=1)
            out_s[start:start + block] = np.take_along_axis(top_s, order, axis=1)
        return out_i, out_s
    for start in range(0, nq, block):
        top_i, top_s = _topk_rows(queries[start:start + block] @ db.T, k)
        out_i[start:start + block] = top_i
        out_s[start:start + block] = top_s
    return out_i, out_s


# ---------------------------------------------------------------------- ANN index
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
        _set_search_param(self.index, self.info, k)
        scores, pos = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return pos, scores


def _set_search_param(index, info: dict[str, Any], k: int) -> None:
    if info.get("kind") == "faiss-ivf-flat-ip":
        _faiss().extract_index_ivf(index).nprobe = int(info.get("nprobe", 16))
    else:
        index.hnsw.efSearch = max(int(info.get("ef_search", HNSW_EF_SEARCH)), k)


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - a declared dependency
        from ..errors import MissingDependencyError

        raise MissingDependencyError("The approximate index needs faiss. Install it with `pip install faiss-cpu`.") from exc
    return faiss


#: ``kind="auto"`` uses HNSW below this many vectors and IVF-Flat from here on: HNSW's build
#: time grows too fast for millions of vectors on a few cores, while IVF trains on a sample.
IVF_MIN_VECTORS = 100_000
INDEX_KINDS = ("auto", "hnsw", "ivf")


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


def build_index(store: EmbeddingStore, *, kind: str = "auto", target_recall: float = 0.95, m: int = HNSW_M,
                ef_construction: int = HNSW_EF_CONSTRUCTION, num_queries: int = 200, seed: int = 0) -> dict[str, Any]:
    """Build the approximate index of ``store``, tune it to ``target_recall`` and save it in the store.

    See :func:`build_ann_index` for the arguments.

    Returns:
        the index info (also written to ``ann.json``): ``kind``, ``recall_at_10``,
        ``num_vectors``, ``build_seconds``, ``query_ms``, ``store_version``, parameters.

    Raises:
        StoreError: the store is empty.
        ConfigError: bad ``kind`` or ``target_recall``.
    """
    faiss = _faiss()
    snap = store.snapshot()
    x = snap["vectors"]
    if x.shape[0] == 0:
        raise StoreError(f"Store {store.path} is empty; embed images first with `transferkit embed DATA --store {store.path}`.")
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
    store._ann_cache = None  # searches pick up the new index
    return info


def build_ann_index(x: np.ndarray, *, kind: str = "auto", target_recall: float = 0.95, m: int = HNSW_M,
                    ef_construction: int = HNSW_EF_CONSTRUCTION, num_queries: int = 200, seed: int = 0):
    """Build a faiss inner-product index over the rows of ``x`` and tune its search parameter.

    The search parameter (HNSW ``efSearch`` or IVF ``nprobe``) is the smallest whose recall@10
    against exact search, measured on ``num_queries`` rows of ``x`` used as queries, reaches
    ``target_recall``.

    Args:
        x: ``(N, D)`` float32, L2-normalised rows.
        kind: ``auto`` (HNSW below :data:`IVF_MIN_VECTORS` rows, IVF-Flat above), ``hnsw`` or ``ivf``.
        target_recall: recall@10 the tuning aims for.
        m, ef_construction: HNSW build parameters.
        num_queries: rows sampled as queries for the recall measurement.
        seed: sampling seed.

    Returns:
        ``(faiss_index, info)``; ``info`` has ``kind``, the tuned parameter, ``recall_at_10``,
        ``build_seconds``, ``query_ms``, ``num_vectors``.
    """
    if kind not in INDEX_KINDS:
        raise ConfigError(f"`kind` of the index must be one of {', '.join(INDEX_KINDS)}; got {kind!r}.")
    if not 0.0 < target_recall <= 1.0:
        raise ConfigError(f"`target_recall` must be in (0, 1]; got {target_recall!r}.")
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
        _set_search_param(index, info, k + 1)
        t1 = time.perf_counter()
        _, ann_i = index.search(x[sample], k + 1)
        query_ms = (time.perf_counter() - t1) / len(sample) * 1e3
        chosen = (value, _recall(_drop_self(ann_i, sample, k), exact_i), query_ms)
        if chosen[1] >= target_recall:
            break
    value, recall, query_ms = chosen
    info.update({param: value, "target_recall": target_recall, "num_vectors": int(n), "recall_at_10": round(recall, 4),
                 "recall_queries": int(len(sample)), "build_seconds": round(build_s, 3), "query_ms": round(query_ms, 4)})
    if recall < target_recall:
        log.warning("The index reaches recall@10 %.3f, below the target %.2f, at its largest %s (%s). "
                    "Hint: search with --exact for exact results.", recall, target_recall, param, value)
    return index, info


def load_index(store: EmbeddingStore) -> AnnIndex | None:
    """The store's index if one was built and still matches the store; ``None`` otherwise (with a warning if stale)."""
    path = Path(store.path)
    meta_path = path / INDEX_META_FILE
    if not meta_path.exists():
        return None
    try:
        info = json.loads(meta_path.read_text(encoding="utf-8"))
        faiss = _faiss()
        index = faiss.read_index(str(path / INDEX_FILE))
        ids = np.load(path / INDEX_IDS_FILE, allow_pickle=False)
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("Ignoring the unreadable ANN index in %s (%s); using exact search. Hint: run `transferkit index %s`.",
                    path, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__, path)
        return None
    if info.get("store_version") != store.version or index.ntotal != len(ids) or index.d != store.dim:
        log.warning("The ANN index of %s is out of date (the store changed since it was built); using exact search. "
                    "Hint: run `transferkit index %s`.", path, path)
        return None
    return AnnIndex(index, ids, info)


def index_info(store: EmbeddingStore) -> dict[str, Any] | None:
    """The saved index info (``ann.json``) or ``None``."""
    p = Path(store.path) / INDEX_META_FILE
    try:
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------- store search
def search_store(store: EmbeddingStore, query, *, top_k: int = 5, label: str | None = None, split: str | None = None,
                 exact: bool = False, exclude_ids: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Top-k search in a store; see :meth:`EmbeddingStore.search`."""
    if not isinstance(top_k, int | np.integer) or top_k < 1:
        raise ConfigError(f"--top-k must be a positive integer; got {top_k!r}.")
    q = check_query(query, store.dim)
    exclude = set(exclude_ids)
    snap = store.snapshot()
    n = len(snap["id"])
    if n == 0:
        return []
    want = top_k + len(exclude)
    positions: np.ndarray
    scores: np.ndarray
    ann = None
    if not (exact or label is not None or split is not None):
        cached = getattr(store, "_ann_cache", None)
        if cached is not None and cached[0] == snap["version"]:
            ann = cached[1]
        else:
            ann = load_index(store)
            store._ann_cache = (snap["version"], ann)
    if ann is not None:
        # Positions in the index match the snapshot only if ids agree; map through ids to be safe.
        pos, scores = ann.search(q[None, :], min(want, n))
        pos, scores = pos[0], scores[0]
        keep = pos >= 0
        id_to_row = {i: r for r, i in enumerate(snap["id"].tolist())}
        rows = [id_to_row.get(str(ann.ids[p])) for p in pos[keep]]
        pairs = [(r, s) for r, s in zip(rows, scores[keep]) if r is not None]
        positions = np.asarray([r for r, _ in pairs], dtype=np.int64)
        scores = np.asarray([s for _, s in pairs], dtype=np.float32)
    else:
        mask = np.ones(n, dtype=bool)
        if label is not None:
            mask &= snap["label"] == label
        if split is not None:
            mask &= snap["split"] == split
        cand = np.flatnonzero(mask)
        if cand.size == 0:
            return []
        idx, sc = exact_topk(snap["vectors"][cand], q[None, :], want)
        positions, scores = cand[idx[0]], sc[0]
    out: list[dict[str, Any]] = []
    for r, s in zip(positions.tolist(), scores.tolist()):
        rid = str(snap["id"][r])
        if rid in exclude:
            continue
        out.append({"rank": len(out) + 1, "score": float(s), "id": rid, "path": snap["path"][r], "relpath": snap["relpath"][r],
                    "label": str(snap["label"][r]), "split": str(snap["split"][r])})
        if len(out) == top_k:
            break
    return out


# ---------------------------------------------------------------------- evaluation
def retrieval_metrics(vectors: np.ndarray, labels: Sequence[str], ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Leave-one-out retrieval quality with labels as ground truth.

    Each vector queries all the others; a result is relevant when it has the query's label.

    Returns:
        ``p_at_k`` (precision@k), ``r_at_k`` (recall@k: share of the query's same-label
        items found in the top k), ``map_at_k`` (mean average precision@k, normalised by
        ``min(k, #relevant)``) for each k, and ``num_queries``.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ConfigError(f"--k values must be positive integers; got {ks}.")
    labels_arr = np.asarray(list(labels), dtype=object)
    n = len(labels_arr)
    if n < 2:
        raise StoreError("Retrieval evaluation needs at least two labelled embeddings.")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    _, codes = np.unique(labels_arr.astype(str), return_inverse=True)
    counts = np.bincount(codes)
    kmax = min(ks[-1], n - 1)
    sums = {f"{m}_at_{k}": 0.0 for k in ks for m in ("p", "r", "map")}
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = x[start:stop] @ x.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # leave the query out
        top_i, _ = _topk_rows(sims, kmax)
        rel = (codes[top_i] == codes[start:stop, None]).astype(np.float64)  # (b, kmax)
        num_rel = counts[codes[start:stop]] - 1  # same-label items other than the query
        cum = np.cumsum(rel, axis=1)
        prec_at_i = cum / np.arange(1, kmax + 1)
        for k in ks:
            kk = min(k, kmax)
            sums[f"p_at_{k}"] += float(np.sum(cum[:, kk - 1] / k))
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where(num_rel > 0, cum[:, kk - 1] / np.maximum(num_rel, 1), 0.0)
                denom = np.minimum(k, num_rel)
                ap = np.where(denom > 0, np.sum(prec_at_i[:, :kk] * rel[:, :kk], axis=1) / np.maximum(denom, 1), 0.0)
            sums[f"r_at_{k}"] += float(np.sum(r))
            sums[f"map_at_{k}"] += float(np.sum(ap))
    out: dict[str, Any] = {key: round(v / n, 6) for key, v in sums.items()}
    out["num_queries"] = int(n)
    out["ks"] = ks
    return out


def _topk_rows(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = sims.shape[1]
    if k < n:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), sims.shape).copy()
    part_s = np.take_along_axis(sims, part, axis=1)
    order = np.lexsort((part, -part_s), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_s, order, axis=1)


def search_eval(store: EmbeddingStore, ks: Sequence[int] = (1, 5, 10), *, split: str | None = None) -> dict[str, Any]:
    """Leave-one-out retrieval evaluation of a store (rows with a non-empty label).

    Returns:
        see :func:`retrieval_metrics` (keys ``p_at_1``, ``p_at_5``, ``p_at_10``, ``map_at_10``,
        ``r_at_k``..., ``num_queries``).

    Raises:
        StoreError: fewer than two labelled rows (e.g. a flat folder without class folders).
    """
    snap = store.snapshot()
    mask = snap["label"] != ""
    if split is not None:
        mask &= snap["split"] == split
    if int(mask.sum()) < 2 or len(set(snap["label"][mask].tolist())) < 1:
        raise StoreError(f"Store {store.path} has fewer than two labelled embeddings"
                         f"{' in split ' + repr(split) if split else ''}; search-eval needs images in class folders (DATA/<class>/*.jpg).")
    return retrieval_metrics(snap["vectors"][mask], snap["label"][mask].tolist(), ks)
