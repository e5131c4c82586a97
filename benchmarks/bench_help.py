"""Target 6: wall time of ``transferkit --help`` (a fresh process each time), median of ``--repeats``.

Usage:
    .venv/bin/python benchmarks/bench_help.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from _common import BIN, PYTHON, machine


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 runs instead of 10")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    n = args.repeats or (5 if args.quick else 10)
    print(f"machine: {machine()}")
    cmds = {"transferkit --help": [str(BIN / "transferkit"), "--help"],
            "transferkit embed --help": [str(BIN / "transferkit"), "embed", "--help"],
            "python -c pass (interpreter floor)": [PYTHON, "-c", "pass"]}
    wall(cmds["transferkit --help"])  # page cache
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(n):  # interleaved
        for name, cmd in cmds.items():
            times[name].append(wall(cmd))
    print(f"\n{'command':<36} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, ts in times.items():
        print(f"{name:<36} {statistics.median(ts):9.3f} {min(ts):7.3f} {max(ts):7.3f}")
    med = statistics.median(times["transferkit --help"])
    print(f"\ntarget 6: transferkit --help median {med:.3f} s over {n} runs (target < 0.5 s) -> {'MET' if med < 0.5 else 'NOT MET'}")


if __name__ == "__main__":
    main()
