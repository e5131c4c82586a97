"""Duplicates at scale: time and peak RSS of group_duplicates on clustered synthetic vectors, and the IVF's recall.

``--clusters`` centres each get ~N/clusters members (cosine ~0.67 to one another: alike, not
copies); ``--copies`` members get one jittered copy (cosine ~0.99: the near duplicates to find).
There are no image files, so the pixel check is off: candidates at >= ``--threshold`` are
accepted at >= ``--accept``. Above ~2e11 multiply-adds the candidates come from a temporary
faiss IVF-Flat range search (see :mod:`transferkit.curate.candidates`); ``--check`` rows are
also searched exactly and by the IVF, and the pair sets compared (the IVF's recall).

Usage:
    .venv/bin/python benchmarks/bench_duplicates.py --n 1000000 --dim 64
    .venv/bin/python benchmarks/bench_duplicates.py --n 200000 --dim 256 --check 50000
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from _common import machine


def clustered(n: int, dim: int, clusters: int, copies: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x, planted)``: unit rows in clusters, the last ``copies`` rows jittered copies of rows ``planted``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for s in range(0, n, step):  # in chunks: the noise of 1M x D at once would double the peak memory
        m = min(step, n - s)
        x[s:s + m] = centres[rng.integers(0, clusters, m)] + rng.normal(scale=0.7 / np.sqrt(dim), size=(m, dim))
    planted = rng.choice(n - copies, size=copies, replace=False)
    x[n - copies:] = x[planted] + rng.normal(scale=0.1 / np.sqrt(dim), size=(copies, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, planted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=20_000)
    ap.add_argument("--copies", type=int, default=10_000, help="rows that get one jittered near copy")
    ap.add_argument("--threshold", type=float, default=0.75, help="candidate cosine (the package's default)")
    ap.add_argument("--accept", type=float, default=0.9, help="cosine accepted without pixels")
    ap.add_argument("--check", type=int, default=50_000, help="rows compared exact vs IVF (0: skip)")
    args = ap.parse_args()
    from transferkit.curate.candidates import candidate_pairs
    from transferkit.curate.duplicates import group_duplicates

    t0 = time.perf_counter()
    x, planted = clustered(args.n, args.dim, args.clusters, args.copies)
    rows = [{"id": str(i), "path": "", "fingerprint": "", "width": 1, "height": 1} for i in range(args.n)]
    t_data = time.perf_counter() - t0
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    report = group_duplicates(rows, x, threshold=args.threshold, accept_threshold=args.accept, pixels=False)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    copy_of = {int(args.n - args.copies + k): int(p) for k, p in enumerate(planted)}
    group_of = {int(i): g for g, grp in enumerate(report.groups) for i in grp.ids}
    found = sum(1 for c, o in copy_of.items() if c in group_of and group_of[c] == group_of.get(o))
    print(f"# {machine()}")
    print(f"n={args.n} dim={args.dim} clusters={args.clusters}: data {t_data:.0f}s (peak RSS {rss_data:.0f} MiB); "
          f"group_duplicates {seconds:.1f}s by {report.extra['candidates_by']}, peak RSS {rss:.0f} MiB; "
          f"{report.extra['num_candidates']} candidates, {len(report.groups)} groups, planted copies found "
          f"{found}/{args.copies}")
    if args.check:
        # planted pairs and random rows: the subset holds both copies and merely alike rows
        rng = np.random.default_rng(1)
        m = min(args.check, args.n)
        k = min(len(planted), m // 4)
        rest = np.setdiff1d(rng.choice(args.n, size=m, replace=False), np.r_[planted[:k], args.n - args.copies + np.arange(k)])
        sub = x[np.r_[planted[:k], args.n - args.copies + np.arange(k), rest][:m]]
        t0 = time.perf_counter()
        exact, _, _ = candidate_pairs(sub, args.threshold, exact_max_work=float("inf"))
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        ivf, _, _ = candidate_pairs(sub, args.threshold, exact_max_work=0)
        t_ivf = time.perf_counter() - t0
        e, a = {tuple(p) for p in exact.tolist()}, {tuple(p) for p in ivf.tolist()}
        print(f"first {m} rows: exact {len(e)} pairs in {t_exact:.1f}s, IVF {len(a)} in {t_ivf:.1f}s; IVF recall "
              f"{len(e & a) / max(len(e), 1):.4f}, pairs not in the exact set {len(a - e)}")


if __name__ == "__main__":
    main()
