"""t-SNE with openTSNE: exact neighbours from blocked matrix products, fast settings from 5,000 points.

openTSNE uses Barnes-Hut below 10k points and FFT-accelerated interpolation above (FFT scales
as N, Barnes-Hut as N log N); on 10k x 512 clustered vectors it is 2.7x faster than
scikit-learn's TSNE at equal trustworthiness (``benchmarks/bench_tsne.py``, BENCHMARKS.md target 5).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from ..events import Reporter

#: From this many points on, t-SNE uses the fast settings (see :func:`tsne`).
FAST_TSNE_MIN_POINTS = 5_000
#: Up to this many points the t-SNE neighbours are exact (blocked matrix products); above,
#: openTSNE's approximate Annoy index.
EXACT_KNN_MAX_POINTS = 50_000
#: Optimisation iterations after the early exaggeration, from FAST_TSNE_MIN_POINTS on
#: (openTSNE's default is 500); trustworthiness stays within run-to-run noise of scikit-learn's.
FAST_TSNE_ITERATIONS = 100
#: openTSNE's early-exaggeration phase, in iterations (its default).
EARLY_EXAGGERATION_ITERATIONS = 250
#: Progress is reported every this many iterations (each report costs one KL-divergence evaluation).
PROGRESS_EVERY = 50


def tsne(x: np.ndarray, *, perplexity: float, seed: int, n_jobs: int, fast: bool = True,
         reporter: Reporter | None = None) -> np.ndarray:
    """2-D t-SNE coordinates of the rows of ``x``; optimisation progress goes to ``reporter`` as a ``"tsne"`` task."""
    from openTSNE import TSNE
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    # Defaults otherwise: PCA initialisation (stable global layout), learning rate n/12.
    n = x.shape[0]
    if n < 2_000:
        # Per-iteration thread start-up costs more than the work below a few thousand points.
        n_jobs = 1
    x64 = x.astype(np.float64, copy=False)
    kwargs: dict = {}
    if fast and n >= FAST_TSNE_MIN_POINTS:
        kwargs = {"n_iter": FAST_TSNE_ITERATIONS, "negative_gradient_method": "fft"}
    total = EARLY_EXAGGERATION_ITERATIONS + kwargs.get("n_iter", 500)
    enabled = reporter is not None and reporter.enabled
    with reporter.task("tsne", total=total, description=f"t-SNE of {n:,} points", unit="it") if enabled else nullcontext() as task:
        if task is not None:
            def advance(iteration, error, embedding) -> bool:
                task.advance(PROGRESS_EVERY)
                return False  # never stop early

            kwargs |= {"callbacks": advance, "callbacks_every_iters": PROGRESS_EVERY}
        est = TSNE(n_components=2, perplexity=perplexity, random_state=seed, n_jobs=n_jobs, verbose=False, **kwargs)
        if not fast:
            return np.asarray(est.fit(x64))
        k = min(n - 1, int(3 * perplexity))
        if n <= EXACT_KNN_MAX_POINTS:
            # Exact neighbours (~1 s on 10k x 512) instead of openTSNE's slower, approximate Annoy index.
            idx, dist = knn_euclidean(x, k)
            affinities = PerplexityBasedNN(perplexity=perplexity, knn_index=PrecomputedNeighbors(idx, dist), n_jobs=n_jobs,
                                           random_state=seed)
        else:
            affinities = PerplexityBasedNN(x64, perplexity=perplexity, method="annoy", n_jobs=n_jobs, random_state=seed)
        return np.asarray(est.fit(x64, affinities=affinities))


def knn_euclidean(x: np.ndarray, k: int, *, block_rows: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row among the other rows, by Euclidean distance.

    Returns ``(indices, distances)``, each ``(n, k)``, nearest first, the point itself
    excluded. Rows are ranked by ``|y|^2 - 2 x.y`` (a float32 matrix product per block of
    ``block_rows``), which orders neighbours as the distance does.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    k = min(k, n - 1)
    sq = np.einsum("ij,ij->i", x, x)
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        rows = np.arange(stop - start)
        score = x[start:stop] @ x.T
        score *= -2.0
        score += sq[None, :]
        score[rows, rows + start] = np.inf  # not its own neighbour
        part = np.argpartition(score, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(score, part, axis=1)
        order = np.argsort(part_scores, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(part, order, axis=1)
        nearest = np.take_along_axis(part_scores, order, axis=1).astype(np.float64) + sq[start:stop, None]
        dist[start:stop] = np.sqrt(np.maximum(nearest, 0.0))
    return idx, dist
