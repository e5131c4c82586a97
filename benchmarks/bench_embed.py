"""Target 1: embedding extraction end to end (files on disk -> vectors, process start included).

Both sides run as subprocesses timed with ``time.perf_counter`` around them, on the same
folder of real photos (hymenoptera + flowers12 + neu_steel, ~3.2k files, symlinked into one
folder of class folders):

- spec: ``benchmarks/spec_baseline.py embed`` (ImageFolder, DataLoader batch 32, no workers,
  the specification's ``FeatureExtractor``, eager NCHW fp32) -> .npz;
- transferkit cold: ``transferkit embed`` with an empty ``TRANSFERKIT_CACHE`` (includes the
  OpenVINO conversion and compilation) into a new store;
- transferkit warm: the same with the conversion cache filled by the cold run, new store.

Fidelity: per-image cosine similarity of transferkit's stored vectors to the spec's fp32 eager
embeddings, matched by (resolved) file path; the minimum over all images is reported.

``resnet18`` runs with a seeded random state_dict saved to a .pth that both sides load (no
network for the ImageNet weights); ``efficientnet_lite0`` uses its bundled ImageNet weights.

Usage:
    .venv/bin/python benchmarks/bench_embed.py              # ~3.2k photos, both models
    .venv/bin/python benchmarks/bench_embed.py --repeat 3   # 3 interleaved rounds, median ratio
    .venv/bin/python benchmarks/bench_embed.py --quick      # 400 photos
    .venv/bin/python benchmarks/bench_embed.py --datasets hymenoptera,flowers12   # camera photos only (1,357)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from _common import (
    BIN,
    PYTHON,
    ROOT,
    images_by_class,
    last_json,
    link_folder,
    machine,
    save_resnet18_weights,
    subsample,
    table,
    timed_run,
)

DATASETS = ("hymenoptera", "flowers12", "neu_steel")


def build_data(dest: Path, limit: int | None, datasets: tuple[str, ...] = DATASETS, copies: int = 1) -> int:
    files: dict[str, list[Path]] = {}
    for ds in datasets:
        for cls, paths in images_by_class(ds).items():
            files.setdefault(f"{ds}_{cls}", []).extend(paths)
    files = subsample(files, limit)
    return link_folder(dest, {cls: paths * copies for cls, paths in files.items()})


def store_vectors(store: Path) -> dict[str, np.ndarray]:
    from transferkit.store.store import EmbeddingStore

    snap = EmbeddingStore.open(store).snapshot()
    return {os.path.realpath(p): v for p, v in zip(snap["path"], snap["vectors"])}


def min_cosine(ref_npz: Path, got: dict[str, np.ndarray]) -> tuple[float, int]:
    ref = np.load(ref_npz)
    cos = []
    for path, v in zip(ref["paths"], ref["embeddings"]):
        w = got.get(os.path.realpath(str(path)))
        if w is None:
            continue
        cos.append(float(np.dot(v, w) / (np.linalg.norm(v) * np.linalg.norm(w) + 1e-30)))
    return (min(cos) if cos else float("nan")), len(cos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 photos instead of all ~3.2k")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--models", default="resnet18,efficientnet_lite0")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="folders of ../shared/datasets to mix (e.g. hymenoptera,flowers12 for photos only)")
    parser.add_argument("--copies", type=int, default=1,
                        help="link each photo this many times under different names (a larger folder of the same photos)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of (spec, cold, warm) per model, interleaved; the verdict uses the median ratio")
    args = parser.parse_args()
    limit = args.limit or (400 if args.quick else None)

    with tempfile.TemporaryDirectory(prefix="tk-bench-embed-") as tmp:
        tmp = Path(tmp)
        datasets = tuple(args.datasets.split(","))
        n = build_data(tmp / "data", limit, datasets, max(1, args.copies))
        weights = save_resnet18_weights(tmp / "resnet18_seed0.pth")
        print(f"machine: {machine()}")
        copies = f", each linked {args.copies} times" if args.copies > 1 else ""
        print(f"data: {n} photos ({' + '.join(datasets)}{copies}) in {tmp / 'data'}; {args.repeat} round(s)")
        rows = []
        ratios: dict[tuple[str, str], list[float]] = {}
        worst_cos: dict[str, float] = {}
        for rnd in range(1, args.repeat + 1):
            for model in args.models.split(","):
                w = ["--weights", str(weights)] if model == "resnet18" else []
                cache = tmp / f"cache-{model}-{rnd}"  # each round starts cold
                spec_s, out = timed_run([PYTHON, str(ROOT / "benchmarks" / "spec_baseline.py"), "embed", str(tmp / "data"),
                                         "--model", model, *w, "--out", str(tmp / f"spec-{model}.npz")])
                rows.append({"round": rnd, "model": model, "run": "spec (eager fp32, ImageFolder)", "seconds": spec_s,
                             "img/s": n / spec_s, "speed-up": 1.0, "min cos": 1.0, "backend": "torch", "precision": "fp32",
                             "setup s": "-"})
                for label in ("cold", "warm"):
                    store = tmp / f"store-{model}-{label}-{rnd}"
                    secs, out = timed_run([str(BIN / "transferkit"), "embed", "--model", model, *w, str(tmp / "data"),
                                           "--store", str(store), "--json", "-q"], env={"TRANSFERKIT_CACHE": str(cache)})
                    rep = last_json(out)
                    inf = rep.get("inference", {})
                    cos, matched = min_cosine(tmp / f"spec-{model}.npz", store_vectors(store))
                    rows.append({"round": rnd, "model": model, "run": f"transferkit embed ({label} cache)", "seconds": secs,
                                 "img/s": n / secs, "speed-up": spec_s / secs, "min cos": f"{cos:.6f}",
                                 "backend": inf.get("backend", "?"), "precision": inf.get("precision", "?"),
                                 "setup s": inf.get("setup_seconds", "?")})
                    if matched != n:
                        print(f"warning: {model} {label}: matched {matched} of {n} images by path")
                    ratios.setdefault((model, label), []).append(spec_s / secs)
                    worst_cos[model] = min(worst_cos.get(model, 1.0), cos)
                print(f"  done round {rnd} {model}", flush=True)
        print()
        print(table(rows, ["round", "model", "run", "seconds", "img/s", "speed-up", "min cos", "backend", "precision", "setup s"]))
        print()
        for model in args.models.split(","):
            parts = []
            ok = worst_cos[model] >= 0.999
            for label in ("cold", "warm"):
                r = sorted(ratios[(model, label)])
                med = float(np.median(r))
                ok = ok and med >= 5
                parts.append(f"{label} {med:.2f}x (runs: {', '.join(f'{x:.2f}' for x in r)})")
            print(f"target 1 [{model}]: median speed-up {'; '.join(parts)} vs spec (target >= 5x); "
                  f"min cos {worst_cos[model]:.6f} (target >= 0.999) -> {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
