"""Issue 22's ``--input-size`` for small images: val accuracy and training time at each input size.

For each small-image dataset and each size, ``tk.train`` runs feature extraction (the fitted head
on frozen features) and partial fine-tuning, each in its own subprocess, with every other option
at its default. The row ``auto`` is the size ``input_size="auto"`` chose. Times are the runs'
``train_seconds`` (feature caching included).

Datasets: the shared eurosat_rgb_small (64-px tiles; its train/ and val/) and mnist_test_png
(28-px digits; a class-balanced subset of ``--mnist`` images split 80/20 by the run's seed).

Usage:
    .venv/bin/python benchmarks/bench_input_size.py
    .venv/bin/python benchmarks/bench_input_size.py --datasets eurosat_rgb_small --sizes 224,128 --strategies partial
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import PYTHON, images_by_class, last_json, link_folder, machine, subsample, table, timed_run
from bench_quality import layout

MODEL = "efficientnet_lite0"

TRAIN = """
import json, sys
import transferkit as tk
size = sys.argv[4] if sys.argv[4] == "auto" else int(sys.argv[4])
run = tk.train(sys.argv[1], model=sys.argv[2], strategy=sys.argv[3], input_size=size, epochs=int(sys.argv[5]),
               out=sys.argv[6], quiet=True)
m = run.metrics
print(json.dumps({"val_accuracy": m["val_accuracy"], "train_seconds": m["train_seconds"], "best_epoch": m["best_epoch"],
                  "size": m["input_size"]["size"], "epoch_images_per_s": max(
                      [float(r.get("images_per_s") or 0) for r in run.history] or [0])}))
"""


def data_folder(name: str, work: Path, mnist: int) -> Path:
    if name == "mnist_test_png":
        dest = work / "data" / f"mnist{mnist}"
        if not dest.exists():
            link_folder(dest, subsample(images_by_class(name), mnist))
        return dest
    return layout(name, work / "data")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="eurosat_rgb_small,mnist_test_png")
    ap.add_argument("--sizes", default="224,160,128,96,64,auto")
    ap.add_argument("--strategies", default="feature-extraction,partial")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--mnist", type=int, default=2000, help="mnist images used (class-balanced).")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tk-input-size-"))
    print(machine(), flush=True)
    rows = []
    for name in args.datasets.split(","):
        data = data_folder(name, work, args.mnist)
        for strategy in args.strategies.split(","):
            for size in args.sizes.split(","):
                _, out = timed_run([PYTHON, "-c", TRAIN, str(data), MODEL, strategy, size, str(args.epochs),
                                    str(work / "runs" / f"{name}-{strategy}-{size}")])
                r = last_json(out)
                rows.append({"dataset": name, "strategy": strategy, "input": size if size != "auto" else f"auto={r['size']}",
                             "val_acc": r["val_accuracy"], "train s": r["train_seconds"], "best epoch": r["best_epoch"],
                             "img/s (epoch)": r["epoch_images_per_s"]})
                print(rows[-1], flush=True)
    print(table(rows, ["dataset", "strategy", "input", "val_acc", "train s", "best epoch", "img/s (epoch)"]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
