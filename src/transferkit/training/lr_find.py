"""``tk.lr_find``: the learning-rate finder on a dataset, with any training option (see :mod:`.lr_sweep`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .._io import write_json_atomic
from .lr_sweep import END_LR, NUM_STEPS, START_LR, LRFindResult, run_sweep

__all__ = ["LRFindResult", "lr_find"]


def lr_find(data: str | os.PathLike, *, out: str | os.PathLike | None = None, start_lr: float = START_LR,
            end_lr: float = END_LR, num_steps: int = NUM_STEPS, progress=None, quiet: bool = False, settings=None,
            **options: Any) -> LRFindResult:
    """Find a learning rate for training ``data`` with ``options`` (any :func:`~transferkit.train` option).

    The sweep starts from the model training would start from: the fitted head for fine-tuning
    (``head_init="fit"``), a random head otherwise; feature extraction sweeps its head on cached features.

    Args:
        out: folder for ``lr_find.png`` and ``lr_find.json`` (None: nothing written).
        start_lr, end_lr, num_steps: the sweep (fastai: 1e-7 to 10 over 100 steps).

    Raises:
        ConfigError, DataError, ...: as :func:`~transferkit.train`.
    """
    from ..errors import ConfigError
    from ..events import make_reporter
    from . import checkpoint as ckpt
    from .config import TrainConfig
    from .context import RunContext
    from .trainer import _Trainer

    if not (0 < start_lr < end_lr) or not isinstance(num_steps, int) or num_steps < 10:
        raise ConfigError(f"The LR sweep needs 0 < start_lr < end_lr and num_steps >= 10; got {start_lr:g}, {end_lr:g}, "
                          f"{num_steps!r}.")
    cfg = TrainConfig.from_options(data, **{**options, "lr": None})
    reporter = make_reporter(progress, quiet=quiet)
    ctx = RunContext.create(cfg.device)
    with ctx.isolated(), tempfile.TemporaryDirectory(prefix="transferkit-lr-find-") as tmp:
        trainer = _Trainer(ckpt.Resume(cfg), Path(tmp), ctx, reporter=reporter, settings=settings)
        trainer.out.mkdir(parents=True, exist_ok=True)
        trainer.prepare_start(sweep=True)
        result = run_sweep(trainer, start_lr=start_lr, end_lr=end_lr, num_steps=num_steps)
    reporter.message(f"LR finder ({len(result.lrs)} steps{', stopped: loss diverged' if result.diverged else ''}, "
                     f"{result.seconds:.1f}s): valley {result.valley:.2e}, steepest {result.steepest:.2e}",
                     **result.summary())
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        result.plot_png(folder / "lr_find.png")
        write_json_atomic(folder / "lr_find.json", result.to_dict())
    return result
