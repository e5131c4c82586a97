"""Duplicates at scale: time and peak RSS of group_duplicates on synthetic clustered vectors.

Each cluster centre gets a few jittered copies (the near duplicates to find); the rest are distinct.
The pair search is exact blocked products (O(N^2 D) time, bounded memory), so 1M vectors is out of
reach on 2 cores: see BENCHMARKS.md for what was measured.

Usage:
    .venv/bin/python benchmarks/bench_duplicates.py --n 100000 --dim 64
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from _common import machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--copies", type=int, default=1000, help="vectors that get one jittered near copy")
    ap.add_argument("--threshold", type=float, default=0.9)
    args = ap.parse_args()
    from transferkit.curate.duplicates import group_duplicates

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n, args.dim)).astype(np.float32)
    x[-args.copies:] = x[:args.copies] + 0.05 * rng.normal(size=(args.copies, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = [{"id": str(i), "path": f"{i}.jpg", "fingerprint": "", "width": 1, "height": 1} for i in range(args.n)]
    t0 = time.perf_counter()
    report = group_duplicates(rows, x, threshold=args.threshold)
    seconds = time.perf_counter() - t0
    found = sum(1 for g in report.groups if len(g.ids) == 2 and abs(int(g.ids[0]) - int(g.ids[1])) == args.n - args.copies)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# {machine()}")
    print(f"n={args.n} dim={args.dim}: {seconds:.1f}s, peak RSS {rss:.0f} MiB, groups {len(report.groups)}, "
          f"planted pairs found {found}/{args.copies}")


if __name__ == "__main__":
    main()
