"""Run every benchmark (``make bench``); ``--quick`` passes ``--quick`` to each for smaller sizes.

Usage:
    .venv/bin/python benchmarks/run_all.py [--quick] [--only embed,train,...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {"help": "bench_help.py", "search": "bench_search.py", "tsne": "bench_tsne.py", "memory": "bench_memory.py",
           "embed": "bench_embed.py", "train": "bench_train.py", "gpu": "bench_gpu.py"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(SCRIPTS))
    args = parser.parse_args()
    failed = []
    for name in args.only.split(","):
        cmd = [sys.executable, str(HERE / SCRIPTS[name])] + (["--quick"] if args.quick else [])
        print(f"\n===== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=HERE.parent)
        print(f"===== {name}: exit {rc}, {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
