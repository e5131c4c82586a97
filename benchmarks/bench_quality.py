"""Issue 22's quality table: val accuracy of each strategy against a linear probe on frozen features.

The reference is what a user tries first: scikit-learn's ``LogisticRegressionCV`` (C chosen by
3-fold CV on the training split) on standardised frozen efficientnet_lite0 features of the
same images (a store written by ``embed_folder``). Against it: ``transferkit train`` with each
strategy and with ``auto``, each on the same train/val split, with its training time.

Datasets: the shared eurosat_rgb_small and neu_steel (far from ImageNet) and flowers12 (near;
its test/ folder serves as val). Each strategy runs in its own subprocess, one after another.

Usage:
    .venv/bin/python benchmarks/bench_quality.py                       # every dataset and strategy, 5 epochs
    .venv/bin/python benchmarks/bench_quality.py --datasets flowers12 --strategies feature-extraction,auto
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import PYTHON, last_json, machine, table, timed_run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DATASETS = {"eurosat_rgb_small": ("train", "val"), "neu_steel": ("train", "val"), "flowers12": ("train", "test")}
STRATEGIES = ("feature-extraction", "partial", "full", "gradual", "auto")
MODEL = "efficientnet_lite0"


def layout(name: str, dest: Path) -> Path:
    """``dest/name/{train,val}`` as links to the shared set's train and val (or test) folders."""
    train, val = DATASETS[name]
    root = dest / name
    root.mkdir(parents=True, exist_ok=True)
    for link, target in (("train", train), ("val", val)):
        if not (root / link).exists():
            (root / link).symlink_to(SHARED / name / target, target_is_directory=True)
    return root


PROBE = """
import json, sys, time
import numpy as np
import transferkit as tk
from sklearn.linear_model import LogisticRegressionCV
from sklearn.preprocessing import StandardScaler
data, store = sys.argv[1], sys.argv[2]
tk.embed_folder(tk.Extractor.from_backbone(sys.argv[3]), data, store, quiet=True)
snap = tk.EmbeddingStore.open(store).snapshot()
x, lab, split = snap["vectors"], snap["label"], snap["split"]
classes = sorted(set(lab)); y = np.array([classes.index(v) for v in lab])
tr, va = split == "train", split == "val"
t0 = time.perf_counter()
sc = StandardScaler().fit(x[tr])
clf = LogisticRegressionCV(Cs=[0.01, 0.03, 0.1, 0.3, 1, 3, 10], cv=3, max_iter=3000).fit(sc.transform(x[tr]), y[tr])
acc = float((clf.predict(sc.transform(x[va])) == y[va]).mean())
print(json.dumps({"val_accuracy": acc, "train_seconds": time.perf_counter() - t0, "C": float(clf.C_[0])}))
"""

TRAIN = """
import json, sys
import transferkit as tk
run = tk.train(sys.argv[1], model=sys.argv[2], strategy=sys.argv[3], epochs=int(sys.argv[4]), out=sys.argv[5], quiet=True,
               **json.loads(sys.argv[6]))
m = run.metrics
print(json.dumps({"input_size": (m.get("input_size") or {}).get("size"), "val_accuracy": m["val_accuracy"], "train_seconds": m["train_seconds"], "strategy": run.strategy,
                  "best_epoch": m["best_epoch"], "head_fit_val": (m.get("head_fit") or {}).get("val_accuracy"),
                  "auto": (m.get("auto") or {}).get("reason")}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--work", type=Path, default=None, help="Folder for the links, stores and runs (default: a temp dir).")
    ap.add_argument("--json", type=Path, default=None, help="Also write the rows here.")
    ap.add_argument("--train-args", default="{}", help='Extra tk.train keywords as JSON, e.g. \'{"ema": 0.999}\'.')
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tk-quality-"))
    import transferkit as tk

    known = set(tk.list_strategies()) | {"auto"}
    rows = []
    print(machine(), flush=True)
    for name in args.datasets.split(","):
        data = layout(name, work / "data")
        secs, out = timed_run([PYTHON, "-c", PROBE, str(data), str(work / "stores" / name), MODEL])
        probe = last_json(out)
        rows.append({"dataset": name, "method": "linear probe (sklearn)", "val_acc": probe["val_accuracy"],
                     "vs probe": 0.0, "train s": probe["train_seconds"], "note": f"C={probe['C']:g}"})
        print(rows[-1], flush=True)
        for strategy in args.strategies.split(","):
            if strategy not in known:
                print(f"skipping {strategy}: not registered", file=sys.stderr)
                continue
            t0 = time.perf_counter()
            _, out = timed_run([PYTHON, "-c", TRAIN, str(data), MODEL, strategy, str(args.epochs),
                                str(work / "runs" / f"{name}-{strategy}-{int(t0)}"), args.train_args])
            r = last_json(out)
            note = f"{r['input_size']} px, best epoch {r['best_epoch']}" + (f", fitted head {r['head_fit_val']:.4f}" if r["head_fit_val"] else "")
            if strategy == "auto":
                note = f"chose {r['strategy']}; " + note
            method = strategy if args.train_args == "{}" else f"{strategy} {args.train_args}"
            rows.append({"dataset": name, "method": method, "val_acc": r["val_accuracy"],
                         "vs probe": (r["val_accuracy"] - probe["val_accuracy"]) * 100, "train s": r["train_seconds"],
                         "note": note})
            print(rows[-1], flush=True)
    print(table(rows, ["dataset", "method", "val_acc", "vs probe", "train s", "note"]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
