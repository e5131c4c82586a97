"""Issue 23: how well label issues and outliers are found, on injected faults in the shared datasets.

Each dataset (every split) is embedded once by ``transferkit.embed_folder`` with
``efficientnet_lite0`` (the path ``transferkit label-issues DATA`` takes), then, per seed:

* **label flips**: 5% of every class (at least one image) get another class's label, drawn
  uniformly (``--mode uniform``) or all the next class in name order (``--mode systematic``).
  ``label_issues_of_rows`` runs on the flipped labels; with N = the number of flips, reported
  are precision@N (of the top N of the ranking, the share that are flips; it equals recall@N,
  a ranking shorter than N counts the missing places as misses), the precision and recall of
  the issues marked ``confident``, and how often the suggested label is the true one.
* **outliers**: ``--per-source`` images from each of the other shared datasets (stray images of
  another kind, labelled with random classes of the host) are added; reported is the share of
  them in the top P (P = the number planted) of *far from everything* and of *far from their class*.

Usage:
    .venv/bin/python benchmarks/eval_label_issues.py                       # 3 datasets, 3 seeds
    .venv/bin/python benchmarks/eval_label_issues.py --datasets flowers12 --seeds 1 --work /tmp/li-eval
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATASETS, machine, table

import transferkit as tk
from transferkit.curate.label_issues import label_issues_of_rows
from transferkit.curate.outliers import outliers_of_rows
from transferkit.curate.source import StoreRows, load_rows

DEFAULT_SETS = ("eurosat_rgb_small", "neu_steel", "flowers12")
#: Where planted outliers come from (each a visibly different kind of image); a host's own set is skipped.
PLANT_SOURCES = ("flowers12", "neu_steel", "eurosat_rgb_small", "mnist_test_png", "hymenoptera")
MODEL = "efficientnet_lite0"


def embedded_rows(name: str, work: Path) -> StoreRows:
    """The dataset's rows, embedded into ``work/<name>`` once (a re-run embeds nothing)."""
    store = work / name
    tk.embed_folder(tk.Extractor.from_backbone(MODEL), DATASETS / name, store, quiet=True)
    return load_rows(store)


def plant_pool(work: Path, sources: list[str], per_source: int, seed: int = 0) -> dict[str, StoreRows]:
    """Per source dataset, the rows of ``4 * per_source`` of its images (linked into a folder, embedded once)."""
    from _common import images_by_class, link_folder, subsample

    out = {}
    for name in sources:
        folder = work / f"plant-{name}"
        if not folder.exists():
            link_folder(folder, subsample(images_by_class(name), 4 * per_source, seed=seed))
        store = work / f"plant-{name}-store"
        tk.embed_folder(tk.Extractor.from_backbone(MODEL), folder, store, quiet=True)
        out[name] = load_rows(store)
    return out


def flip_labels(labels: np.ndarray, rate: float, mode: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(new labels, flipped rows)``: ``rate`` of each class (at least one) moved to another class."""
    classes = np.unique(labels)
    out = labels.copy()
    flipped = []
    for c_i, c in enumerate(classes):
        rows = np.flatnonzero(labels == c)
        chosen = rng.choice(rows, size=max(1, round(rate * len(rows))), replace=False)
        others = classes[classes != c]
        if mode == "systematic":
            out[chosen] = classes[(c_i + 1) % len(classes)]
        else:
            out[chosen] = rng.choice(others, size=len(chosen))
        flipped.append(chosen)
    return out, np.sort(np.concatenate(flipped))


def eval_flips(rows: StoreRows, *, rate: float, mode: str, seed: int, folds: int) -> dict:
    rng = np.random.default_rng(seed)
    true = rows.labels.astype(str)
    noisy, flipped = flip_labels(true, rate, mode, rng)
    noisy_rows = StoreRows(rows.ids, rows.paths, rows.relpaths, noisy.astype(object), rows.splits, rows.vectors, rows.store)
    t0 = time.perf_counter()
    report = label_issues_of_rows(noisy_rows, folds=folds)
    seconds = time.perf_counter() - t0
    row_of = {str(i): r for r, i in enumerate(rows.ids.tolist())}
    ranked = np.asarray([row_of[i.id] for i in report.issues], dtype=np.int64)
    is_flip = np.isin(ranked, flipped)
    confident = np.asarray([i.confident for i in report.issues], dtype=bool)
    n = len(flipped)
    flip_set = set(flipped.tolist())
    suggested_right = [true[row_of[i.id]] == i.suggested_label for i in report.issues[:n] if row_of[i.id] in flip_set]
    return {"images": len(rows), "classes": len(report.classes), "flips": n, "ranked": len(report.issues),
            "precision_at_n": round(float(is_flip[:n].sum() / n), 4), "confident": int(confident.sum()),
            "precision_confident": round(float(is_flip[confident].mean()) if confident.any() else 0.0, 4),
            "recall_confident": round(float(is_flip[confident].sum() / n), 4),
            "suggested_right": round(float(np.mean(suggested_right)) if suggested_right else 0.0, 4),
            "estimated": round(report.estimated_num_issues, 1), "oof_accuracy": report.cross_validation["accuracy"],
            "l2": report.cross_validation["l2"], "seconds": round(seconds, 2)}


def eval_outliers(host: StoreRows, pool: dict[str, StoreRows], *, per_source: int, seed: int, k: int) -> dict:
    rng = np.random.default_rng(seed)
    picks = [(src, int(i)) for src, rows in pool.items() for i in rng.choice(len(rows), size=per_source, replace=False)]
    planted = len(picks)
    classes = np.unique(host.labels.astype(str))
    fake_labels = rng.choice(classes, size=planted).astype(object)
    rows = StoreRows(np.concatenate([host.ids, np.asarray([f"{s}:{pool[s].ids[i]}" for s, i in picks], dtype=object)]),
                     host.paths + [pool[s].paths[i] for s, i in picks], host.relpaths + [pool[s].relpaths[i] for s, i in picks],
                     np.concatenate([host.labels, fake_labels]), np.concatenate([host.splits, np.full(planted, "planted", object)]),
                     np.concatenate([host.vectors, np.stack([pool[s].vectors[i] for s, i in picks])]), host.store)
    planted_ids = set(rows.ids[len(host):].tolist())
    t0 = time.perf_counter()
    report = outliers_of_rows(rows, k=k, top=planted, use_store_index=False)
    seconds = time.perf_counter() - t0
    far = sum(o.id in planted_ids for o in report.outliers) / planted
    own = sum(o.id in planted_ids for o in report.class_outliers) / planted
    return {"images": len(rows), "planted": planted, "far_precision_at_n": round(far, 4), "class_precision_at_n": round(own, 4),
            "flagged_z": report.num_flagged, "seconds": round(seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DEFAULT_SETS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--modes", default="uniform,systematic")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--per-source", type=int, default=3, help="Planted outliers from each other dataset.")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--work", type=Path, default=None, help="Keep the stores here (a re-run embeds nothing).")
    ap.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tk-label-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# {machine()}")
    flips, outs = [], []
    for ds in args.datasets.split(","):
        t0 = time.perf_counter()
        rows = embedded_rows(ds, work)
        print(f"# {ds}: {len(rows)} images embedded/loaded in {time.perf_counter() - t0:.1f}s", flush=True)
        for mode in args.modes.split(","):
            for seed in range(args.seeds):
                flips.append({"dataset": ds, "mode": mode, "seed": seed,
                              **eval_flips(rows, rate=args.rate, mode=mode, seed=seed, folds=args.folds)})
                print(json.dumps(flips[-1]), flush=True)
        pool = plant_pool(work, [s for s in PLANT_SOURCES if s != ds], args.per_source)
        for seed in range(args.seeds):
            outs.append({"dataset": ds, "seed": seed, **eval_outliers(rows, pool, per_source=args.per_source, seed=seed, k=args.k)})
            print(json.dumps(outs[-1]), flush=True)
    print("\n## Label flips\n")
    print(table(flips, ["dataset", "mode", "seed", "images", "flips", "ranked", "precision_at_n", "confident",
                        "precision_confident", "recall_confident", "suggested_right", "estimated", "oof_accuracy", "seconds"]))
    print("\n## Outliers\n")
    print(table(outs, list(outs[0])))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "flips": flips, "outliers": outs}, indent=2))


if __name__ == "__main__":
    main()
