"""Training throughput in 1 and in N processes (torchrun, gloo on the CPU; NCCL with ``--device cuda``).

Each configuration is a ``transferkit train`` subprocess on the same data and global batch (``--nproc N`` runs it
under torchrun), each process with ``--threads`` intra-op threads. The figure is the last epoch's ``images_per_s``
from ``history.csv``: images through forward and backward per second of the training phase, over all processes
(the first epoch, with its warm-up, is left out). Overhead is how far N processes fall short of N times one.

Usage:
    .venv/bin/python benchmarks/bench_ddp.py
    .venv/bin/python benchmarks/bench_ddp.py --model tiny_cnn --nprocs 1,2 --epochs 3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from _common import PYTHON, ROOT, machine, table


def run_once(data: Path, out: Path, nproc: int, args) -> dict:
    cmd = [PYTHON, "-m", "transferkit", "train", str(data), "--model", args.model, "--strategy", args.strategy,
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--workers", "0", "--head-init", "random",
           "--device", args.device, "--out", str(out), "--quiet", "--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    with (out / "history.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    total = float(last["images_per_s"])
    return {"nproc": nproc, "images_per_s": total, "per_process": total / nproc,
            "epoch_train_seconds": float(last["train_seconds"]), "wall_seconds": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "src" / "transferkit" / "sample_data" / "hymenoptera_mini")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--strategy", default="partial")
    ap.add_argument("--nprocs", default="1,2")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16, help="the global batch (each of N processes takes 1/N).")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per process.")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tk-ddp-"))
    rows = [run_once(args.data, work / f"n{n}", n, args) for n in map(int, args.nprocs.split(","))]
    base = rows[0]["images_per_s"] / rows[0]["nproc"]
    for r in rows:
        r["overhead"] = 1 - r["images_per_s"] / (base * r["nproc"])
    print(machine())
    print(f"{args.model} {args.strategy}, global batch {args.batch_size}, {args.threads} thread(s) per process, "
          f"{args.device}, epoch {args.epochs} of {args.epochs}")
    cols = ["processes", "images/s (all)", "images/s per process", "overhead vs N x 1", "epoch train s", "wall s"]
    print(table([dict(zip(cols, [r["nproc"], f"{r['images_per_s']:.1f}", f"{r['per_process']:.1f}", f"{r['overhead']:+.0%}",
                                 f"{r['epoch_train_seconds']:.1f}", f"{r['wall_seconds']:.0f}"])) for r in rows], cols))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
