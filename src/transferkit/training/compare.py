"""``compare``: train several strategies on the same data and budget, side by side."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .._io import write_json_atomic
from ..events import Callback, Reporter, make_reporter
from ..strategies.auto import LADDER
from .trainer import train


def compare(data: str | os.PathLike, *, model: str = "resnet18", epochs: int = 5, out: str | os.PathLike | None = None,
            strategies=LADDER, progress: Callback | Reporter | None = None, quiet: bool = False, settings=None,
            **options: Any) -> list[dict[str, Any]]:
    """Train each strategy on the same data and budget; write ``compare.json`` in ``out``.

    Args:
        strategies: registered strategy names (default: those ``auto`` chooses among).
        options: other :class:`~transferkit.training.config.TrainConfig` fields, the same for every run.

    Returns:
        One row per strategy: ``strategy``, ``val_accuracy``, ``val_loss``, ``trainable_params``,
        ``total_params``, ``seconds``, ``train_seconds``, ``run``.
    """
    out_dir = Path(out) if out is not None else Path("runs") / datetime.now().strftime("compare-%Y%m%d-%H%M%S")
    reporter = make_reporter(progress, quiet=quiet)
    rows = []
    for name in strategies:
        reporter.message(f"== {name}", strategy=name)
        t0 = time.perf_counter()
        run = train(data, model=model, strategy=name, epochs=epochs, out=out_dir / name, progress=reporter, settings=settings,
                    **options)
        m = run.metrics
        rows.append({
            "strategy": name, "val_accuracy": m["val_accuracy"], "val_loss": m["val_loss"],
            "trainable_params": m["parameters"]["trainable"], "total_params": m["parameters"]["total"],
            "seconds": time.perf_counter() - t0, "train_seconds": m["train_seconds"], "run": str(run.path),
        })
    write_json_atomic(out_dir / "compare.json", {"data": str(data), "model": model, "epochs": epochs, "results": rows})
    return rows
