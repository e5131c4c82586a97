"""Every row's k nearest other rows (cosine), exactly in blocks or through a faiss index; never an N x N matrix.

Below :data:`EXACT_MAX_VECTORS` rows the scan is exact (:func:`~transferkit.store.search.exact_topk`,
blocks of queries bounded to ~64 MB of scores). From there on, or when asked, the store's own
approximate index answers when it is up to date, else an IVF-Flat index is built in memory
(:func:`~transferkit.store.index.build_ann_index`, tuned to recall@10 >= 0.95) and not saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..events import Reporter
from ..store.index import build_ann_index
from ..store.search import exact_topk

#: Exact scans up to this many rows (20k x 20k x 512 = 0.2 T multiply-adds: ~16 s here, extrapolated from the 391 s measured at
#: 100k in BENCHMARKS.md); an index above (4-6x faster at 100k, recall@10 0.97).
EXACT_MAX_VECTORS = 20_000
#: Score elements (queries x rows) per exact block, and queries per index search call.
_BLOCK_ELEMENTS = 16 * 1024 * 1024
_INDEX_QUERIES = 16_384


@dataclass
class Neighbours:
    """The ``k`` nearest other rows of every row.

    Attributes:
        indices: ``(N, k)`` int64 row positions, best first; ``-1`` where an index found fewer.
        similarities: ``(N, k)`` float32 cosine similarities (NaN where ``indices`` is -1).
        method: ``exact``, ``store index`` or ``in-memory IVF index``.
        info: the index's info (kind, recall@10, ...) when one was used.
    """

    indices: np.ndarray
    similarities: np.ndarray
    method: str
    info: dict[str, Any] | None = None


def drop_self(idx: np.ndarray, sims: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(k + 1)``-neighbour lists without the query row itself (or, where it is absent, without the last entry)."""
    own = idx == rows[:, None]
    # one entry per row is dropped: the row itself, else the last (an exact duplicate may have pushed the row out)
    drop = own & (np.cumsum(own, axis=1) == 1)
    drop[~own.any(1), -1] = True
    keep = ~drop
    return idx[keep].reshape(len(rows), k), sims[keep].reshape(len(rows), k)


def nearest_neighbours(vectors: np.ndarray, k: int, *, exact: bool | None = None, store: Any = None, row_ids: np.ndarray | None = None,
                       reporter: Reporter | None = None) -> Neighbours:
    """The ``k`` nearest other rows of every row of ``vectors`` (L2-normalised, float32).

    Args:
        k: neighbours per row (capped at N - 1).
        exact: True: exact scan; False: an index; None: exact below :data:`EXACT_MAX_VECTORS` rows.
        store: the store the rows come from; its index is used when up to date and ``row_ids`` (the
            rows' ids, in order) cover it.
        reporter: progress (a ``neighbours`` task over the rows).
    """
    reporter = reporter or Reporter(None)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    k = max(1, min(int(k), n - 1))
    use_exact = n <= EXACT_MAX_VECTORS if exact is None else bool(exact)
    idx = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    search, method, info = None, "exact", None
    if not use_exact:
        search, method, info = _index_search(x, store, row_ids, reporter)
    step = max(1, _BLOCK_ELEMENTS // n) if use_exact else _INDEX_QUERIES
    with reporter.task("neighbours", total=n, description=f"Nearest neighbours ({method})") as task:
        for start in range(0, n, step):
            rows = np.arange(start, min(start + step, n))
            if use_exact:
                bi, bs = exact_topk(x, x[rows], k + 1)
            else:
                bi, bs = search(x[rows], k + 1)
            idx[rows], sims[rows] = drop_self(bi, bs, rows, k)
            task.advance(len(rows))
    sims[idx < 0] = np.nan
    return Neighbours(idx, sims, method, info)


def _index_search(x: np.ndarray, store: Any, row_ids: np.ndarray | None, reporter: Reporter):
    """``(search(queries, k) -> (rows, sims), method, info)`` from the store's index, else a new in-memory one."""
    ann = store.ann_index() if store is not None and row_ids is not None else None
    # a streamed IVF-PQ (a store bigger than RAM) has no id list to map: an in-memory index is built instead
    if ann is not None and not getattr(ann, "streamed", False) and len(ann.ids) == len(row_ids):
        row_of = {str(i): r for r, i in enumerate(row_ids.tolist())}
        mapping = np.asarray([row_of.get(str(i), -1) for i in ann.ids.tolist()], dtype=np.int64)
        if (mapping >= 0).all():
            def search_store(q, k):
                pos, sc = ann.search(q, k)
                return np.where(pos >= 0, mapping[np.maximum(pos, 0)], -1), sc

            return search_store, "store index", dict(ann.info)
    with reporter.task("index", total=None, description="Building an in-memory IVF index"):
        index, info = build_ann_index(x, kind="ivf")

    def search_new(q, k):
        from ..store.index import set_search_param

        set_search_param(index, info, k)
        sc, pos = index.search(q, k)
        return pos.astype(np.int64), sc

    return search_new, "in-memory IVF index", info
