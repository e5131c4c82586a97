"""Time openTSNE (as used by ``transferkit.viz.projection.project``) against scikit-learn's TSNE defaults.

Data: ``--n`` L2-normalised vectors in ``--dim`` dimensions drawn around ``--clusters``
random centres at distance 0.15 from the origin. Each cluster has its own low-rank spread
(a 16-dimensional subspace, like the few directions along which images of one class vary)
plus isotropic noise larger than the distance between centres, so neighbourhoods inside a
cluster are noisy, as in real image embeddings (5-NN accuracy in the original space is
about 0.98 rather than 1.0).

Quality: ``sklearn.manifold.trustworthiness`` (n_neighbors=10) on a fixed random subsample of
``--eval`` points (trustworthiness on all 10k points needs full pairwise distances), and the
5-NN accuracy of the cluster labels in the 2-D map.

Usage:
    .venv/bin/python benchmarks/bench_tsne.py               # 10k x 512, ~ several minutes on 2 cores
    .venv/bin/python benchmarks/bench_tsne.py --quick       # 2,000 points
    .venv/bin/python benchmarks/bench_tsne.py --store S     # real embeddings: transferkit embed DATA --store S
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import machine


def make_embeddings(n: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    centres *= 0.15 / np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, size=n)
    rank = 16
    bases = rng.normal(size=(clusters, rank, dim)) / np.sqrt(dim)
    latent = rng.normal(size=(n, rank)) * 0.5
    x = centres[labels] + np.einsum("nr,nrd->nd", latent, bases[labels]) + rng.normal(size=(n, dim)) * (1.5 / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def quality(x: np.ndarray, y: np.ndarray, labels: np.ndarray, sub: np.ndarray) -> tuple[float, float]:
    from sklearn.manifold import trustworthiness
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    tw = trustworthiness(x[sub], y[sub], n_neighbors=10)
    knn = cross_val_score(KNeighborsClassifier(5), y, labels, cv=5).mean()
    return float(tw), float(knn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 points instead of 10,000")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--eval", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--store", default=None,
                        help="use the vectors and labels of an embedding store (transferkit embed) instead of synthetic ones")
    args = parser.parse_args()
    args.n = args.n or (2_000 if args.quick else 10_000)

    from sklearn.manifold import TSNE as SkTSNE

    from transferkit.viz.projection import project

    if args.store:
        from transferkit.store.store import EmbeddingStore

        snap = EmbeddingStore.open(args.store).snapshot()
        x = np.asarray(snap["vectors"], dtype=np.float32)[: args.n]
        labels = np.unique(np.asarray(snap["label"])[: args.n], return_inverse=True)[1]
        args.n, args.dim, args.clusters = len(x), x.shape[1], int(labels.max()) + 1
    else:
        x, labels = make_embeddings(args.n, args.dim, args.clusters, args.seed)
    sub = np.random.default_rng(1).choice(args.n, size=min(args.eval, args.n), replace=False)
    print(f"machine: {machine()}")
    print(f"data: {args.n} x {args.dim}, {args.clusters} clusters, {os.cpu_count()} CPU cores")

    runs = [
        ("transferkit viz.project (n_jobs=-1)", lambda: project(x, method="tsne", seed=0, n_jobs=-1).coords),
        ("transferkit viz.project (n_jobs=1)", lambda: project(x, method="tsne", seed=0, n_jobs=1).coords),
    ]
    if not args.skip_sklearn:
        runs.append(("sklearn TSNE defaults", lambda: SkTSNE(n_components=2, random_state=0).fit_transform(x)))

    rows = []
    for name, fn in runs:
        t0 = time.perf_counter()
        y = fn()
        seconds = time.perf_counter() - t0
        tw, knn = quality(x, y, labels, sub)
        rows.append((name, seconds, tw, knn))
        print(f"  done: {name}: {seconds:.1f} s", flush=True)

    ref = rows[-1] if not args.skip_sklearn else None
    print()
    print(f"{'method':<40} {'seconds':>8} {'trustw@10':>10} {'5-NN acc':>9} {'speed-up':>9} {'d trustw':>9}")
    for name, seconds, tw, knn in rows:
        speed = f"{ref[1] / seconds:8.1f}x" if ref else "       -"
        dtw = f"{tw - ref[2]:+9.4f}" if ref else "        -"
        print(f"{name:<40} {seconds:8.1f} {tw:10.4f} {knn:9.3f} {speed:>9} {dtw}")
    if ref:
        best = min(rows[:-1], key=lambda r: r[1])
        ratio, dtw = ref[1] / best[1], best[2] - ref[2]
        ok = ratio >= 5 and abs(dtw) <= 0.02
        print(f"\ntarget 5: {best[0]} is {ratio:.1f}x faster than sklearn TSNE defaults (target >= 5x), "
              f"trustworthiness {dtw:+.4f} (target within 0.02) on {args.n} x {args.dim} -> {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
