"""Target 7: embedding streams: peak RSS grows with the embedding matrix, not with the image tensors.

Embeds N and 4N images (``transferkit embed`` in a fresh process each, torch backend fp32 so
no conversion is involved, plus the default fast path) and reads the child's peak RSS
(``ru_maxrss`` of the waited-for child). If images were held, 3N more images would cost
3N x 3 x 224 x 224 x 4 bytes (~0.6 MB each); streaming costs only the extra embeddings
(3N x dim x 4 bytes) plus bookkeeping.

Usage:
    .venv/bin/python benchmarks/bench_memory.py            # N = 400 (mnist_test_png)
    .venv/bin/python benchmarks/bench_memory.py --quick    # N = 150
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from _common import BIN, ROOT, images_by_class, link_folder, machine, subsample, table

MB = 1024 * 1024


def peak_rss(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MiB of the child, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, **env), cwd=ROOT)
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--model", default="efficientnet_lite0")
    args = parser.parse_args()
    n = args.n or (150 if args.quick else 400)
    print(f"machine: {machine()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tk-bench-mem-") as tmp:
        tmp = Path(tmp)
        files = images_by_class("mnist_test_png")
        for size in (n, 4 * n):
            link_folder(tmp / f"data{size}", subsample(files, size))
        for backend in ("torch", "auto"):
            extra = ["--backend", "torch", "--precision", "fp32"] if backend == "torch" else []
            for size in (n, 4 * n):
                rss, secs = peak_rss([str(BIN / "transferkit"), "embed", "--model", args.model, str(tmp / f"data{size}"),
                                      "--store", str(tmp / f"store-{backend}-{size}"), "-q", *extra],
                                     {"TRANSFERKIT_CACHE": str(tmp / "cache")})
                rows.append({"backend": backend, "images": size, "peak RSS MiB": rss, "seconds": secs})
    print()
    print(table(rows, ["backend", "images", "peak RSS MiB", "seconds"]))
    held = 3 * n * 3 * 224 * 224 * 4 / MB
    verdicts = []
    for backend in ("torch", "auto"):
        a, b = [r["peak RSS MiB"] for r in rows if r["backend"] == backend]
        growth = b - a
        verdicts.append(growth < held / 4)
        print(f"{backend}: peak RSS grows {growth:+.1f} MiB from {n} to {4 * n} images; holding the image tensors "
              f"would add ~{held:.0f} MiB; the extra embeddings are {3 * n * 1280 * 4 / MB:.1f} MiB")
    print(f"target 7: {'MET' if all(verdicts) else 'NOT MET'} (growth well under the image-tensor size)")


if __name__ == "__main__":
    main()
