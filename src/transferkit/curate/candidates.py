"""Candidate near-duplicate pairs: every pair of rows with cosine >= a threshold, without an N x N matrix.

Small inputs use exact blocked products (:func:`near_pairs`). Above :data:`EXACT_MAX_WORK`
multiply-adds (about ten seconds on 2 cores) the pairs come from a faiss IVF-Flat range
search: the store's own index when it is an IVF one over the same rows, else a temporary
one built here (:func:`build_ivf`). IVF-Flat keeps
the vectors themselves, so every score it returns is the exact cosine; only pairs that fall
in lists the search does not probe can be missed, and near duplicates sit so close together
that they rarely do (recall against the exact method is measured in BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np

#: Score elements (rows x columns) per block of the exact pairwise products: 16M float32 = 64 MB.
BLOCK_ELEMENTS = 16 * 1024 * 1024
#: Above this many multiply-adds (N^2 D / 2) the exact method gives way to the IVF range search.
EXACT_MAX_WORK = 2e11
#: Lists probed by the range search; 1M x 64-d clustered vectors: see BENCHMARKS.md "Duplicates at scale".
RANGE_NPROBE = 8
#: Queries per range-search call (bounds the result buffers).
QUERY_BATCH = 32_768


def near_pairs(vectors: np.ndarray, threshold: float, *, block_elements: int = BLOCK_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``i < j`` of rows with cosine similarity >= ``threshold``, exactly, in bounded blocks.

    Args:
        vectors: ``(N, D)`` L2-normalised rows.
        threshold: cosine similarity in (0, 1].
        block_elements: most scores held at once (rows x columns of one block).

    Returns:
        ``(pairs (P, 2) int64, similarities (P,) float32)``.
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    found_pairs, found_sims = [np.empty((0, 2), np.int64)], [np.empty(0, np.float32)]
    col_step = max(1, min(n, block_elements))
    row_step = max(1, block_elements // col_step)
    for r0 in range(0, n, row_step):
        r1 = min(r0 + row_step, n)
        for c0 in range(r0, n, col_step):  # only columns at or after the block's first row: j > i below
            c1 = min(c0 + col_step, n)
            scores = x[r0:r1] @ x[c0:c1].T
            ri, ci = np.nonzero(scores >= threshold)
            rows, cols = ri + r0, ci + c0
            upper = cols > rows
            found_pairs.append(np.stack([rows[upper], cols[upper]], axis=1).astype(np.int64))
            found_sims.append(scores[ri[upper], ci[upper]].astype(np.float32))
    return np.concatenate(found_pairs), np.concatenate(found_sims)


def build_ivf(x: np.ndarray, *, seed: int = 0):
    """A temporary faiss IVF-Flat inner-product index over ``x`` (not saved), ~4 sqrt(N) lists as the store's own.

    Fewer lists (sqrt(8 N), or 2 sqrt(N) with 5 k-means rounds) train faster but search slower:
    no gain at 300k x 64, and 382 s against 305 s at 200k x 1280 (BENCHMARKS.md).
    """
    from ..store._faiss import load as _faiss

    faiss = _faiss()
    n, dim = x.shape
    nlist = max(1, int(min(8192, n // 39, max(16, round(4 * np.sqrt(n))))))  # faiss wants 39+ training points per list
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    index.cp.max_points_per_centroid = 40
    rng = np.random.default_rng(seed)
    index.train(x[rng.choice(n, size=min(n, 40 * nlist), replace=False)])
    index.add(x)
    return index


def range_pairs(index, x: np.ndarray, threshold: float, *, positions: np.ndarray | None = None,
                nprobe: int = RANGE_NPROBE, batch: int = QUERY_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``i < j`` (rows of ``x``) with cosine >= ``threshold`` by the IVF ``index``'s range search.

    Args:
        index: a faiss IVF inner-product index.
        x: ``(N, D)`` L2-normalised rows, the queries.
        positions: the row of ``x`` at each index position (None: the index holds ``x`` in order);
            ``-1`` for positions not among the rows.
    """
    from ..store._faiss import load as _faiss

    _faiss().extract_index_ivf(index).nprobe = int(nprobe)
    pairs, sims = [np.empty((0, 2), np.int64)], [np.empty(0, np.float32)]
    radius = float(np.nextafter(np.float32(threshold), np.float32(-1)))  # faiss keeps scores > radius: >= threshold here
    for s in range(0, len(x), batch):
        lims, scores, found = index.range_search(np.ascontiguousarray(x[s:s + batch], dtype=np.float32), radius)
        query = np.repeat(np.arange(s, s + len(lims) - 1), np.diff(lims.astype(np.int64)))
        other = found.astype(np.int64) if positions is None else positions[found]
        keep = (other >= 0) & (other != query)
        a, b = np.minimum(query[keep], other[keep]), np.maximum(query[keep], other[keep])
        pairs.append(np.stack([a, b], axis=1))
        sims.append(scores[keep].astype(np.float32))
    p, sc = np.concatenate(pairs), np.concatenate(sims)
    # each pair is usually found from both sides: keep one copy
    p, first = np.unique(p, axis=0, return_index=True)
    return p, sc[first]


def candidate_pairs(vectors: np.ndarray, threshold: float, *, index=None, positions: np.ndarray | None = None,
                    block_elements: int = BLOCK_ELEMENTS, exact_max_work: float = EXACT_MAX_WORK,
                    nprobe: int = RANGE_NPROBE) -> tuple[np.ndarray, np.ndarray, str]:
    """``(pairs, similarities, method)``: pairs ``i < j`` with cosine >= ``threshold``, exactly or by IVF range search.

    ``index`` (with ``positions``, see :func:`range_pairs`) is an IVF index to use instead of a
    temporary one; ``method`` is ``"exact"``, ``"store-ivf"`` or ``"ivf"``.
    """
    n, dim = vectors.shape
    if index is None and n * n * dim / 2 <= exact_max_work:
        return (*near_pairs(vectors, threshold, block_elements=block_elements), "exact")
    method = "store-ivf" if index is not None else "ivf"
    if index is None:
        index, positions = build_ivf(np.ascontiguousarray(vectors, dtype=np.float32)), None
    return (*range_pairs(index, vectors, threshold, positions=positions, nprobe=nprobe), method)
