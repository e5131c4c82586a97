"""Issue 21: embedding on Ray against the local engine (images/s, and what Ray's start-up costs).

Both sides run ``transferkit embed --model MODEL --json`` as subprocesses into a new store, on
the same folder of shared photos (symlinked), one after the other, ``--repeat`` rounds
interleaved:

- local: ``--engine local`` (one process: decode threads + the model);
- ray: ``--engine ray --workers N`` (a local Ray started by the command: decode tasks, N actors
  each holding one extractor, one commit).

Reported per run: wall seconds (process start to exit, Ray's start and stop included), the
report's images/s (from the first image to the last, after start-up), and the overhead of the
Ray run against the local one. The conversion cache is warmed once first, so neither side pays
the OpenVINO conversion. The stores are then compared (same ids, min cosine).

Usage:
    .venv/bin/python benchmarks/bench_ray.py [--datasets hymenoptera,flowers12] [--workers 2] [--repeat 2]
    .venv/bin/python benchmarks/bench_ray.py --quick     # hymenoptera only (399 photos)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from _common import BIN, PYTHON, ROOT, images_by_class, last_json, link_folder, machine, table, timed_run


def _embed(data: Path, store: Path, model: str, engine: str, workers: int, batch_size: int) -> dict:
    cmd = [str(BIN / "transferkit"), "embed", str(data), "--model", model, "--store", str(store), "--json", "--quiet",
           "--batch-size", str(batch_size), "--engine", engine]
    if engine == "ray":
        cmd += ["--workers", str(workers)]
    seconds, out = timed_run(cmd, env={"PYTHONPATH": str(ROOT / "src")})
    report = last_json(out)
    return {"engine": engine if engine == "local" else f"ray x{workers}", "wall s": seconds,
            "img/s (embedding)": report["images_per_second"], "img/s (wall)": report["added"] / seconds,
            "rows": report["num_rows"], "inference": f"{report['inference'].get('backend')} {report['inference'].get('precision')}",
            "store": str(store)}


def _min_cosine(a: str, b: str) -> tuple[bool, float]:
    code = ("import sys, json, numpy as np, transferkit as tk\n"
            "v = [dict(zip(*tk.EmbeddingStore.open(p).vectors())) for p in sys.argv[1:]]\n"
            "same = sorted(v[0]) == sorted(v[1])\n"
            "cos = min(float(np.dot(v[0][i], v[1][i])) for i in v[0]) if same else 0.0\n"
            "print(json.dumps({'same': same, 'cos': cos}))")
    _, out = timed_run([PYTHON, "-c", code, a, b], env={"PYTHONPATH": str(ROOT / "src")})
    r = json.loads(out)
    return bool(r["same"]), float(r["cos"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="hymenoptera,flowers12")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="hymenoptera only, one round")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    datasets = ["hymenoptera"] if args.quick else args.datasets.split(",")
    repeat = 1 if args.quick else args.repeat
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        n = sum(link_folder(data / name, images_by_class(name)) for name in datasets)
        print(f"{n} photos from {', '.join(datasets)}; {args.model}, batch {args.batch_size}")
        _embed(data, tmp / "warm", args.model, "local", args.workers, args.batch_size)  # fills the conversion cache
        rows = []
        for k in range(repeat):
            for engine in ("local", "ray"):
                rows.append({"round": k + 1, **_embed(data, tmp / f"{engine}{k}", args.model, engine, args.workers,
                                                      args.batch_size)})
        local = [r for r in rows if r["engine"] == "local"]
        ray = [r for r in rows if r["engine"] != "local"]
        same, cos = _min_cosine(local[0]["store"], ray[0]["store"])
        cols = ["round", "engine", "wall s", "img/s (embedding)", "img/s (wall)", "rows", "inference"]
        print(table(rows, cols))
        med = {name: {c: statistics.median(r[c] for r in group) for c in ("wall s", "img/s (embedding)", "img/s (wall)")}
               for name, group in (("local", local), ("ray", ray))}
        print(f"median wall: local {med['local']['wall s']:.1f} s, ray {med['ray']['wall s']:.1f} s "
              f"(overhead {med['ray']['wall s'] - med['local']['wall s']:+.1f} s); embedding img/s: local "
              f"{med['local']['img/s (embedding)']:.1f}, ray {med['ray']['img/s (embedding)']:.1f} "
              f"({med['ray']['img/s (embedding)'] / med['local']['img/s (embedding)']:.2f}x)")
        print(f"same ids: {same}; min cosine ray vs local: {cos:.6f}")
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": rows, "median": med, "same_ids": same, "min_cosine": cos,
                                                   "photos": n, "machine": machine()}, indent=1, default=str))


if __name__ == "__main__":
    main()
