"""The learning-rate sweep (fastai's ``lr_find``) on a set-up trainer: the sweep, its loss curve and two suggestions.

``tk.lr_find("data/", model="resnet18", strategy="partial")`` trains the run's model for ~100
steps while the learning rate grows from 1e-7 to 10, records the smoothed loss, stops once it
diverges (4x its minimum), restores the model, and suggests the LR at the "valley" (fastai's
default) and at the "steepest" descent. ``train(..., lr="auto")`` runs it first and trains at
the valley LR.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._io import write_json_atomic

START_LR, END_LR, NUM_STEPS = 1e-7, 10.0, 100
#: Smoothing of the loss (fastai's beta) and the divergence test: stop once the smoothed loss passes 4x its minimum.
BETA, DIVERGE = 0.98, 4.0


@dataclass
class LRFindResult:
    """A finished sweep.

    Attributes:
        lrs, losses: the head group's learning rate and the smoothed (debiased) loss at each step.
        raw_losses: the unsmoothed loss of each step.
        valley, steepest: the two suggestions (fastai's semantics); ``suggestion`` is the valley.
        diverged: whether the sweep stopped early because the loss diverged.
        groups: each optimizer group's LR as a multiple of the head's (kept fixed during the sweep).
        strategy, model: what was swept.
        seconds: wall time.
        plot: the PNG written by :meth:`plot_png` (or by :func:`lr_find` with ``out``), if any.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    valley: float
    steepest: float
    diverged: bool
    groups: dict[str, float] = field(default_factory=dict)
    strategy: str = ""
    model: str = ""
    seconds: float = 0.0
    plot: str | None = None

    @property
    def suggestion(self) -> float:
        return self.valley

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "suggestion": self.suggestion}

    def summary(self) -> dict[str, Any]:
        """What a run records: the suggestions, not the curve."""
        return {k: v for k, v in self.to_dict().items() if k not in ("lrs", "losses", "raw_losses")}

    def plot_png(self, path: str | os.PathLike) -> Path:
        """Loss vs LR (log scale) with both suggestions marked."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        ax.plot(self.lrs, self.losses, color="#1f77b4", label="smoothed loss")
        for lr, colour, name in ((self.valley, "#d62728", "valley"), (self.steepest, "#2ca02c", "steepest")):
            y = self.losses[min(range(len(self.lrs)), key=lambda i: abs(math.log(self.lrs[i] / lr)))]
            ax.plot([lr], [y], "o", color=colour, label=f"{name} {lr:.2e}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (head)")
        ax.set_ylabel("training loss")
        ax.set_title(f"LR finder: {self.model}, {self.strategy}")
        ax.legend()
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path)
        plt.close(fig)
        self.plot = str(path)
        return path


def sweep(step: Callable[[], float], optimizer: torch.optim.Optimizer, *, start_lr: float = START_LR,
          end_lr: float = END_LR, num_steps: int = NUM_STEPS, on_step: Callable[[int], None] | None = None):
    """Run ``step`` (one optimisation step, returning its loss) at exponentially growing LRs.

    Each optimizer group keeps its ratio to the first group's LR (discriminative LRs stay discriminative).

    Returns:
        ``(lrs, smoothed, raw, diverged, ratios)``.
    """
    base = optimizer.param_groups[0]["lr"] or 1.0
    ratios = [g["lr"] / base for g in optimizer.param_groups]
    lrs, smoothed, raw = [], [], []
    avg, best, diverged = 0.0, math.inf, False
    for i in range(num_steps):
        lr = start_lr * (end_lr / start_lr) ** (i / max(num_steps - 1, 1))
        for g, r in zip(optimizer.param_groups, ratios):
            g["lr"] = lr * r
        loss = float(step())
        avg = BETA * avg + (1 - BETA) * loss
        value = avg / (1 - BETA ** (i + 1))
        lrs.append(lr)
        raw.append(loss)
        smoothed.append(value)
        if on_step:
            on_step(i + 1)
        if not math.isfinite(value) or (i > 0 and value > DIVERGE * best):
            diverged = True
            break
        best = min(best, value)
    return lrs, smoothed, raw, diverged, ratios


def suggest_valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's ``valley``: the longest stretch of decreasing loss, and a point two-thirds of the way down it."""
    n = len(losses)
    lds = [1] * n
    start, end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[end] < lds[i]:
            end, start = i, i - lds[i]
    sections = (end - start) / 3
    return lrs[min(n - 1, int(start + sections + sections / 2))]


def suggest_steepest(lrs: list[float], losses: list[float]) -> float:
    """The LR where the smoothed loss falls fastest per decade of LR."""
    grads = [(losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i])) for i in range(len(lrs) - 1)]
    return lrs[min(range(len(grads)), key=grads.__getitem__)] if grads else lrs[0]


def suggest(lrs: list[float], losses: list[float]) -> tuple[float, float]:
    """``(valley, steepest)`` on the curve without its first tenth and last 5 points (fastai's trimming)."""
    lo, hi = len(lrs) // 10, max(len(lrs) - 5, len(lrs) // 10 + 2)
    lrs, losses = lrs[lo:hi], losses[lo:hi]
    return suggest_valley(lrs, losses), suggest_steepest(lrs, losses)


def run_sweep(trainer, *, start_lr: float = START_LR, end_lr: float = END_LR, num_steps: int = NUM_STEPS) -> LRFindResult:
    """Sweep a set-up ``_Trainer``'s model and optimizer (cached features for a frozen backbone, else images), then
    restore both, BatchNorm statistics included."""
    from .optim import train_step

    t0 = time.perf_counter()
    model, opt = trainer.model, trainer.optimizer
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    # A frozen backbone (feature extraction, gradual's first epochs) sweeps the head on cached features: the same loss
    # without a backbone forward pass per step (3 s against 140 s for images on the bundled sample).
    frozen = not any(p.requires_grad for p in model.backbone.parameters())
    feats = trainer.cached or (trainer.head_features if frozen else None)
    if feats is not None:
        head = model.head
        head.train()

        def batches():
            for epoch in range(1, 10**6):
                for batch in trainer._epoch_batches(len(feats.train), epoch):
                    idx = torch.tensor(batch, device=trainer.ctx.device)
                    yield feats.train[idx], feats.train_labels[idx]
        net = head
    else:
        from ..inference.policy import training_autocast_dtype

        def batches():
            for epoch in range(1, 10**6):
                for x, y, _idx, _bad in trainer.train_loader(epoch):
                    if x is not None:
                        yield x.to(trainer.ctx.device).contiguous(memory_format=torch.channels_last), y.to(trainer.ctx.device)
        net = model
        trainer.set_train_mode()
    amp = None if feats is not None else training_autocast_dtype(trainer.ctx.device, trainer.cfg.precision, model)
    data = batches()

    def step() -> float:
        x, y = next(data)
        loss, _ = train_step(net, opt, trainer.criterion, x, y, amp, mixer=None if feats is not None else trainer.mixer)
        return loss.item()

    names = [g.get("name", f"group{i}") for i, g in enumerate(opt.param_groups)]
    try:
        with trainer.reporter.task("lr-find", total=num_steps, description="LR finder", unit="step") as task:
            lrs, losses, raw, diverged, ratios = sweep(step, opt, start_lr=start_lr, end_lr=end_lr, num_steps=num_steps,
                                                       on_step=lambda i: task.advance(1))
    finally:
        data.close()  # stops the loader's workers
        model.load_state_dict(saved_model)
        opt.load_state_dict(saved_opt)
    if len(lrs) < 10:
        from ..errors import DataError

        raise DataError(f"The LR finder's loss diverged after {len(lrs)} steps, from {start_lr:g}: too few points to "
                        "suggest a learning rate. Lower `start_lr`.")
    valley, steepest = suggest(lrs, losses)
    return LRFindResult(lrs, losses, raw, valley, steepest, diverged, dict(zip(names, ratios)),
                        strategy=trainer.strategy_name, model=trainer.cfg.model, seconds=time.perf_counter() - t0)


def apply_auto_lr(trainer, fitted_only: bool):
    """``lr="auto"``: sweep ``trainer`` (set up, head fitted), then train at the valley LR, the backbone's scaled by the
    same factor; the choice goes into ``config.json`` (so a resumed run keeps it), ``model.json`` and ``metrics.json``.

    Returns:
        the trainer's new config.
    """
    from dataclasses import replace

    from . import checkpoint as ckpt

    cfg = trainer.cfg
    if fitted_only:
        trainer.progress.lr_find = {"skipped": "feature extraction fits its head in closed form (no learning rate); "
                                               "pass head_init='random' to train it by SGD"}
        trainer.reporter.message("LR finder: skipped; " + trainer.progress.lr_find["skipped"] + ".")
        return cfg
    from . import distributed

    main = trainer.ctx.is_main
    result = distributed.broadcast_object(trainer.ctx, run_sweep(trainer))  # each process swept its shard; rank 0's counts
    if main:
        result.plot_png(trainer.out / "lr_find.png")
        write_json_atomic(trainer.out / "lr_find.json", result.to_dict())
    lr = result.suggestion
    trainer.cfg = cfg = replace(cfg, lr=None, head_lr=lr, backbone_lr=cfg.backbone_lr * lr / cfg.head_lr)
    if main:
        ckpt.write_config(trainer.out, cfg, strategy=trainer.strategy_name, auto=trainer.auto)
    trainer.optimizer, trainer.scheduler = trainer._make_optimizer(1)
    trainer.progress.lr_find = {**result.summary(), "head_lr": lr, "backbone_lr": cfg.backbone_lr}
    trainer.reporter.message(f"LR finder ({len(result.lrs)} steps, {result.seconds:.1f}s): valley {result.valley:.2e}, "
                             f"steepest {result.steepest:.2e} -> head lr {lr:.2e}, backbone lr {cfg.backbone_lr:.2e} "
                             f"(plot: {trainer.out / 'lr_find.png'})", **trainer.progress.lr_find)
    trainer.param_summary = trainer._describe_params()
    if trainer.progress.head_fit and main:  # model.json of the fitted head (the best model so far) records the choice too
        from .model import save_model

        save_model(trainer.model, trainer.out, trainer._meta())
    return cfg
