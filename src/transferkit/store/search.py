"""Cosine-similarity search: the spec's API, exact top-k, and top-k over a store.

Search with an index uses faiss (see :mod:`.index`), not LanceDB's own indexes: at 20k
vectors LanceDB's per-query overhead (4.6-6.1 ms) exceeds an exact numpy scan (0.5 ms), so
LanceDB stays the system of record for rows and faiss serves the index (BENCHMARKS.md,
target 4).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import ConfigError

# Bound the (queries x database) similarity block to ~256 MB of float32.
BLOCK_ELEMENTS = 64 * 1024 * 1024
# From this many scores (queries x rows) on, exact_topk uses torch.topk.
_TORCH_TOPK_ELEMENTS = 4 * 1024 * 1024


def normalize(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


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
        emb = np.asarray(embeddings_db, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ConfigError(f"`embeddings_db` must be a non-empty (N, D) matrix; got shape {emb.shape}.")
        if labels_db is not None and len(labels_db) != emb.shape[0]:
            raise ConfigError(f"`labels_db` has {len(labels_db)} entries but `embeddings_db` has {emb.shape[0]} rows; "
                              f"pass one label per row.")
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


def check_top_k(top_k) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise ConfigError(f"`top_k` must be a positive integer; got {top_k!r}.")
    return int(top_k)


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
    k = check_top_k(k)
    db = np.ascontiguousarray(db, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = db.shape[0]
    k = min(k, n)
    nq = queries.shape[0]
    out_i = np.empty((nq, k), dtype=np.int64)
    out_s = np.empty((nq, k), dtype=np.float32)
    block = max(1, BLOCK_ELEMENTS // max(n, 1))
    if nq * n >= _TORCH_TOPK_ELEMENTS:
        # Large batches: torch's multi-threaded topk is 3-6x faster than numpy's argpartition
        # over the score block; small ones stay in numpy so one query does not import torch.
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
        top_i, top_s = topk_rows(queries[start:start + block] @ db.T, k)
        out_i[start:start + block] = top_i
        out_s[start:start + block] = top_s
    return out_i, out_s


def topk_rows(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a score block, the ``k`` largest ``(columns, scores)``, best first, ties by column."""
    n = sims.shape[1]
    if k < n:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), sims.shape).copy()
    part_s = np.take_along_axis(sims, part, axis=1)
    order = np.lexsort((part, -part_s), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_s, order, axis=1)


# ---------------------------------------------------------------------- store search
def search_vectors(store: Any, query, *, top_k: int = 5, label: str | None = None, split: str | None = None,
                   exact: bool = False, exclude_ids: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The ``top_k`` rows of ``store`` most cosine-similar to the vector ``query``.

    ``store`` is an :class:`~transferkit.EmbeddingStore`. Its approximate index answers when it
    exists, is up to date and no label/split filter is given; otherwise the search is exact.
    With a streamed IVF-PQ index (a store bigger than RAM) the vectors are never all loaded: the
    index's candidates are re-ranked from the table, and an exact or filtered search scans it in chunks.

    Returns:
        dicts with ``rank`` (1-based), ``score`` (cosine similarity), ``id``, ``path``,
        ``relpath``, ``label``, ``split``, best first.

    Raises:
        ConfigError: zero query vector, wrong dimension, ``top_k`` < 1.
    """
    top_k = check_top_k(top_k)
    q = check_query(query, store.dim)
    exclude = set(exclude_ids)
    version = store.version
    index = store.ann_index(version=version)
    if getattr(index, "streamed", False):  # a store bigger than RAM: never a snapshot of its vectors
        found = index.search_rows(store, q, top_k + len(exclude), exact=exact, label=label, split=split)
        found = [(s, row) for s, row in found if row["id"] not in exclude][:top_k]
        return [{"rank": r + 1, "score": s, **{c: str(row[c]) for c in ("id", "path", "relpath", "label", "split")}}
                for r, (s, row) in enumerate(found)]
    snap = store.snapshot(version=version)
    n = len(snap["id"])
    if n == 0:
        return []
    want = top_k + len(exclude)
    ann = None if (exact or label is not None or split is not None) else index
    if ann is not None:
        # Positions in the index match the snapshot only if ids agree; map through ids to be safe.
        pos, scores = ann.search(q[None, :], min(want, n))
        pos, scores = pos[0], scores[0]
        keep = pos >= 0
        row_of = snap.get("row_of")
        if row_of is None:  # a snapshot-like dict without the store's cached id -> row map
            row_of = {i: r for r, i in enumerate(snap["id"].tolist())}
        rows = [row_of.get(str(ann.ids[p])) for p in pos[keep]]
        pairs = [(r, s) for r, s in zip(rows, scores[keep]) if r is not None]
        positions = np.asarray([r for r, _ in pairs], dtype=np.int64)
        scores = np.asarray([s for _, s in pairs], dtype=np.float32)
    else:
        if label is None and split is None:  # no filter: scan the matrix itself, not a copy of it
            batcher = snap.get("batcher")  # the store's: concurrent queries share one scan
            if batcher is not None:
                positions, scores = batcher.topk(q, want)
            else:
                idx, sc = exact_topk(snap["vectors"], q[None, :], want)
                positions, scores = idx[0], sc[0]
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
