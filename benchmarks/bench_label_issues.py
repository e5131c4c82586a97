"""Issue 23 at scale: label issues (cross-validated heads + confident learning) and kNN outliers over 100k rows.

The rows are synthetic but shaped like image embeddings: ``--classes`` clusters in ``--dim``
dimensions that share a common direction (pooled CNN features are all alike in part: cosine
between class centres ~0.5), L2-normalised; ``--noise`` of the labels are moved to a random
other class. Each phase runs in a fresh process so its peak RSS is its own:

* ``label-issues``: ``label_issues_of_rows`` (5-fold heads, the L2 grid, confident learning);
  precision@N of the flips is printed as a sanity check.
* ``outliers``: ``outliers_of_rows`` (kNN: exact blocked scan with ``--exact``, else the
  in-memory faiss IVF index), with ``--planted`` far rows whose ranks are checked.

Usage:
    .venv/bin/python benchmarks/bench_label_issues.py                   # 100k x 512, 100 classes, both phases
    .venv/bin/python benchmarks/bench_label_issues.py --n 20000 --phases outliers --exact
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine


def make_rows(n: int, dim: int, classes: int, noise: float, planted: int, seed: int = 0):
    """``(StoreRows, flipped rows, planted rows)`` of synthetic embeddings (see the module docstring)."""
    from transferkit.curate.source import StoreRows

    rng = np.random.default_rng(seed)
    common = rng.normal(size=dim).astype(np.float32)
    common /= np.linalg.norm(common)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    true = rng.integers(0, classes, size=n)
    x = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 65_536):  # in blocks: no float64 (n, dim) temporary
        t = true[s:s + 65_536]
        x[s:s + len(t)] = common + 0.7 * centres[t] + 0.9 / np.sqrt(dim) * rng.standard_normal((len(t), dim), dtype=np.float32)
    far = rng.choice(n, size=planted, replace=False)
    x[far] = rng.normal(size=(planted, dim)).astype(np.float32)  # directions unrelated to every cluster
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = true.copy()
    flipped = rng.choice(np.setdiff1d(np.arange(n), far), size=int(noise * n), replace=False)
    labels[flipped] = (true[flipped] + rng.integers(1, classes, size=len(flipped))) % classes
    names = np.array([f"c{c:03d}" for c in range(classes)], dtype=object)
    store = type("SyntheticStore", (), {"path": "(synthetic)", "model_id": {"backbone": "synthetic"}})()
    rows = StoreRows(np.array([f"r{i}" for i in range(n)], dtype=object), [""] * n, [""] * n, names[labels],
                     np.full(n, "train", dtype=object), x, store)
    return rows, flipped, far


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_phase(args) -> dict:
    rows, flipped, far = make_rows(args.n, args.dim, args.classes, args.noise, args.planted)
    base = peak_rss_mib()
    t0 = time.perf_counter()
    if args.phase == "label-issues":
        from transferkit.curate.label_issues import label_issues_of_rows

        report = label_issues_of_rows(rows, folds=args.folds)
        seconds = time.perf_counter() - t0
        row_of = {r: i for i, r in enumerate(rows.ids.tolist())}
        top = [row_of[i.id] for i in report.issues[:len(flipped)]]
        cv = report.cross_validation
        out = {"flips": len(flipped), "flagged": len(report.issues), "precision_at_n": round(float(np.isin(top, flipped).sum() / len(flipped)), 4),
               "cv_seconds": cv["seconds"], "l2": cv["l2"], "oof_accuracy": cv["accuracy"]}
    else:
        from transferkit.curate.outliers import outliers_of_rows

        report = outliers_of_rows(rows, k=args.k, top=args.planted, exact=True if args.exact else None, use_store_index=False)
        seconds = time.perf_counter() - t0
        found = {int(o.id[1:]) for o in report.outliers}
        out = {"planted": args.planted, "planted_in_top": len(found & set(far.tolist())), "method": report.neighbours["method"],
               "recall_at_10": report.neighbours.get("recall_at_10")}
    return {"phase": args.phase, "n": args.n, "dim": args.dim, "classes": args.classes, "seconds": round(seconds, 2),
            "rss_before_mib": round(base), "peak_rss_mib": round(peak_rss_mib()), **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--planted", type=int, default=50)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--exact", action="store_true", help="Outliers: exact blocked kNN instead of the faiss index.")
    ap.add_argument("--phases", default="label-issues,outliers")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)  # one phase, in this process
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args)), flush=True)
        return
    print(f"# {machine()}")
    for phase in args.phases.split(","):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase,
               *[f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("phase", "phases", "exact")],
               *(["--exact"] if args.exact else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        print(proc.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
