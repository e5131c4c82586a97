"""Leakage at scale: the near-copy candidates of M evaluation rows among N training rows, exact and by IVF.

Clustered synthetic vectors as in bench_duplicates.py; ``--copies`` evaluation rows are jittered
copies (cosine ~0.99) of training rows, the rest fresh rows of the same clusters. Measures
:func:`transferkit.curate.leakage.top_candidates` (the candidate step of train/pipeline's
leakage check; the pixel check then reads only those pairs) both ways: time, peak RSS and the
planted copies found, and the IVF's agreement with the exact pairs.

Usage:
    .venv/bin/python benchmarks/bench_leakage.py --n 1000000 --m 100000 --dim 64
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from _common import machine
from bench_duplicates import clustered


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="training rows")
    ap.add_argument("--m", type=int, default=100_000, help="evaluation rows")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=20_000)
    ap.add_argument("--copies", type=int, default=5_000)
    ap.add_argument("--no-exact", action="store_true", help="skip the exact run (it grows as N x M)")
    args = ap.parse_args()
    from transferkit.curate.duplicates import DEFAULT_THRESHOLD
    from transferkit.curate.leakage import top_candidates

    x, _ = clustered(args.n + args.m, args.dim, args.clusters, 0)
    train, fresh = x[:args.n], x[args.n:]
    rng = np.random.default_rng(1)
    planted = rng.choice(args.n, args.copies, replace=False)
    q = fresh.copy()
    q[:args.copies] = train[planted] + rng.normal(scale=0.1 / np.sqrt(args.dim), size=(args.copies, args.dim))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    print(f"# {machine()}; {args.n:,} training x {args.m:,} evaluation rows, dim {args.dim}, {args.copies:,} planted copies")
    results = {}
    for name, kw in (("ivf", {"exact_max_work": 0}), ("exact", {"exact_max_work": float("inf")})):
        if name == "exact" and args.no_exact:
            continue
        t0 = time.perf_counter()
        qi, ti, sims = top_candidates(q, train, DEFAULT_THRESHOLD, **kw)
        dt = time.perf_counter() - t0
        best = {}
        for j, i in zip(qi.tolist(), ti.tolist()):
            best.setdefault(j, i)  # most similar first per query
        found = sum(best.get(j) == int(planted[j]) for j in range(args.copies))
        results[name] = set(zip(qi.tolist(), ti.tolist()))
        print(f"{name:5s}: {dt:7.1f} s, {len(qi):,} candidate pairs, planted copies found {found:,} / {args.copies:,}, "
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB", flush=True)
    if "exact" in results:
        agree = len(results["ivf"] & results["exact"]) / max(len(results["exact"]), 1)
        print(f"IVF pairs among the exact ones: {agree:.4f}")


if __name__ == "__main__":
    main()
