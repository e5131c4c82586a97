"""Before/after: the same embedding and training commands from two source trees, interleaved, one machine.

Each tree's ``src`` is put first on ``PYTHONPATH`` of ``python -c "from transferkit.cli import
entrypoint; entrypoint()" ...`` (the rest of the environment is this venv), so a refactor is
compared with the commit before it under the same packages, files and CPU state. Rounds
alternate the order (A B, B A, ...); each tree keeps its own conversion cache, warmed once
before the timed rounds, so the rows compare warm runs.

Workloads:
- embed: ``transferkit embed`` of camera photos (hymenoptera + flowers12, 1,357 files) with
  efficientnet_lite0 (bundled ImageNet weights) and resnet18 (a seeded random .pth) into a new store;
- train-fe: ``transferkit train --strategy feature-extraction`` (cached frozen features), 5 epochs;
- train-partial: ``transferkit train --strategy partial``, 2 epochs, no augmentation (images/s of
  the training phase from ``history.csv``).
  Training data: eurosat_rgb_small + neu_steel (16 classes), per class 25 train / 10 val for
  fine-tuning and 125 / 60 for feature extraction.

Usage:
    .venv/bin/python benchmarks/bench_ab.py --before /work/before [--after .] [--rounds 2] [--only embed,train-fe]
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import tempfile
from pathlib import Path

from _common import PYTHON, ROOT, images_by_class, link_folder, machine, save_resnet18_weights, table, timed_run

CLI = "from transferkit.cli import entrypoint; entrypoint()"


def split_folder(dest: Path, datasets: tuple[str, ...], n_train: int, n_val: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    train: dict[str, list[Path]] = {}
    val: dict[str, list[Path]] = {}
    for ds in datasets:
        for cls, paths in images_by_class(ds).items():
            paths = list(paths)
            rng.shuffle(paths)
            train[f"{ds}_{cls}"] = paths[:n_train]
            val[f"{ds}_{cls}"] = paths[n_train:n_train + n_val]
    link_folder(dest / "train", train)
    link_folder(dest / "val", val)


def run(tree: Path, args: list[str], cache: Path) -> float:
    seconds, _ = timed_run([PYTHON, "-c", CLI, *args], env={"PYTHONPATH": str(tree / "src"), "TRANSFERKIT_CACHE": str(cache)})
    return seconds


def images_per_s(run_dir: Path) -> float:
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    return statistics.mean(float(r["images_per_s"]) for r in rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True)
    p.add_argument("--after", type=Path, default=ROOT)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--only", default="embed,train-fe,train-partial")
    a = p.parse_args()
    trees = {"before": a.before.resolve(), "after": a.after.resolve()}
    only = a.only.split(",")
    print(f"Machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="tk-ab-") as tmp:
        tmp = Path(tmp)
        photos = tmp / "photos"
        files = {}
        for ds in ("hymenoptera", "flowers12"):
            for cls, paths in images_by_class(ds).items():
                files.setdefault(f"{ds}_{cls}", []).extend(paths)
        n_photos = link_folder(photos, files)
        split_folder(tmp / "ft", ("eurosat_rgb_small", "neu_steel"), 25, 10)
        split_folder(tmp / "fe", ("eurosat_rgb_small", "neu_steel"), 125, 60)
        r18 = save_resnet18_weights(tmp / "resnet18.pth")
        jobs = {}
        if "embed" in only:
            jobs["embed efficientnet_lite0"] = lambda out: ["embed", str(photos), "--model", "efficientnet_lite0",
                                                             "--store", str(out), "-q"]
            jobs["embed resnet18"] = lambda out: ["embed", str(photos), "--model", "resnet18", "--weights", str(r18),
                                                  "--store", str(out), "-q"]
        if "train-fe" in only:
            jobs["train-fe efficientnet_lite0"] = lambda out: ["train", str(tmp / "fe"), "--model", "efficientnet_lite0",
                                                               "--strategy", "feature-extraction", "--epochs", "5",
                                                               "--out", str(out), "--quiet"]
        if "train-partial" in only:
            jobs["train-partial resnet18"] = lambda out: ["train", str(tmp / "ft"), "--model", "resnet18", "--weights",
                                                          str(r18), "--strategy", "partial", "--epochs", "2",
                                                          "--no-augment", "--out", str(out), "--quiet"]
        caches = {name: tmp / f"cache-{name}" for name in trees}
        n = 0
        for name, tree in trees.items():  # warm each tree's conversion cache once
            for job, make in jobs.items():
                if job.startswith("embed") or job.startswith("train-fe"):
                    n += 1
                    run(tree, make(tmp / f"warm{n}"), caches[name])
        results: dict[tuple[str, str], list[float]] = {}
        speeds: dict[tuple[str, str], list[float]] = {}
        for r in range(a.rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for job, make in jobs.items():
                for name in order:
                    n += 1
                    out = tmp / f"out{n}"
                    results.setdefault((job, name), []).append(run(trees[name], make(out), caches[name]))
                    if job.startswith("train"):
                        speeds.setdefault((job, name), []).append(images_per_s(out))
        rows = []
        for job in jobs:
            b, af = results[(job, "before")], results[(job, "after")]
            row = {"workload": job, "before s": "/".join(f"{x:.1f}" for x in b), "after s": "/".join(f"{x:.1f}" for x in af),
                   "after/before": statistics.median(af) / statistics.median(b)}
            if (job, "before") in speeds:
                row["img/s before"] = "/".join(f"{x:.1f}" for x in speeds[(job, "before")])
                row["img/s after"] = "/".join(f"{x:.1f}" for x in speeds[(job, "after")])
            rows.append(row)
        print(f"{n_photos} photos for embedding; {a.rounds} interleaved rounds; before={trees['before']} after={trees['after']}")
        print(table(rows, ["workload", "before s", "after s", "after/before", "img/s before", "img/s after"]))


if __name__ == "__main__":
    main()
