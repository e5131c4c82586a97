"""Training: :func:`train` and the loop over epochs (cached frozen features, or images through the model).

The public entry point is :func:`train`, which returns a :class:`~transferkit.training.run.Run`.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from .._io import write_json_atomic
from ..backbones import create_backbone
from ..config import ProcessLayout
from ..curate.leakage import split_leakage
from ..data.folders import ImageSet, discover
from ..data.loading import make_loader
from ..errors import DataError
from ..events import Callback, Reporter, make_reporter
from ..inference.policy import training_autocast_dtype
from ..strategies import Strategy, get_strategy
from ..tracking import Tracker, open_tracker
from . import checkpoint as ckpt
from . import distributed
from .config import TrainConfig
from .context import RunContext, epoch_seed
from .ema import WeightEMA, averaged
from .evaluate import classification_metrics, loss_and_accuracy, predict_logits
from .features import CachedFeatures, FrozenFeatures, resumed_inference
from .input_size import choose_input_size, input_note
from .model import TransferModel, save_model
from .optim import BatchMixer, freeze_batchnorm, make_criterion, make_optimizer, train_step, train_transform
from .run import Run

log = logging.getLogger("transferkit")


def _default_out() -> Path:
    return Path("runs") / datetime.now().strftime("train-%Y%m%d-%H%M%S")


def train(data: str | os.PathLike, *, config: TrainConfig | None = None, out: str | os.PathLike | None = None,
          resume: bool = False, progress: Callback | Reporter | None = None, quiet: bool = False, settings=None,
          **options: Any) -> Run:
    """Train a classifier on an image folder by transfer learning.

    ``tk.train("data/", model="resnet18", strategy="partial", epochs=3, out="runs/r1")``

    Args:
        data: folder with ``train/`` and ``val/`` class folders, or a folder of class folders
            (split by ``val_fraction`` and ``seed``).
        config: a :class:`~transferkit.training.config.TrainConfig` (default: the defaults);
            ``options`` replace its fields.
        out: run directory (default ``runs/train-<timestamp>``).
        resume: continue the run in ``out`` from its last completed epoch, with the options it was
            started with (``data`` and ``options`` are then only checked); a finished run is just reopened.
        progress: a callback receiving :class:`~transferkit.events.Event` s (epoch lines carry the
            epoch's metrics as ``data``); default: rendered on stderr.
        quiet: no progress bars or messages.
        settings: :class:`~transferkit.config.Settings` (conversion cache, pixel limit); None: the environment's.
        **options: any :class:`~transferkit.training.config.TrainConfig` field: ``model``, ``strategy``,
            ``epochs``, ``batch_size``, ``seed``, ``weights``, ``head_lr``, ``backbone_lr``, ``tracker``, ...

    Returns:
        The finished :class:`~transferkit.training.run.Run`.

    Raises:
        ConfigError: an unknown option, a bad value or an unusable ``tracker_uri``. DataError: unusable data.
        RunError: ``out`` holds a run (without ``resume``) or none (with it). CorruptRunError: a damaged run to resume.
        WeightsUnavailableError: pretrained weights unobtainable. MissingDependencyError: ``tracker``'s extra is missing.
    """
    requested = TrainConfig.from_options(data, config=config, **options)
    layout = ProcessLayout.from_env()  # several processes under torchrun: only rank 0 reports and writes
    reporter = make_reporter(progress, quiet=quiet or not layout.is_main)
    out_dir = Path(out) if out is not None else _default_out()
    if resume:
        state = ckpt.load_resume(out_dir, clean=layout.is_main)
        if state.finished:
            reporter.message(f"Run {out_dir} is already complete.")
            return Run.load(out_dir)
    else:
        ckpt.check_new_run_dir(out_dir)
        state = ckpt.Resume(requested)
    with distributed.session(state.config.device, layout) as ctx:
        out_dir = distributed.broadcast_object(ctx, out_dir)  # the default's timestamp is rank 0's
        distributed.barrier(ctx)  # every process checked the folder before rank 0 writes into it
        tracker = open_tracker(state.config, out_dir, reporter=reporter) if ctx.is_main else Tracker()  # fails before any work
        with ctx.isolated(), tracker:  # the caller's global RNG state is the same after training
            return _Trainer(state, out_dir, ctx, reporter=reporter, settings=settings, tracker=tracker).fit()


class _Trainer:
    """One run: set up from its config (data, model, strategy) on construction; :meth:`fit` trains it."""

    def __init__(self, state: ckpt.Resume, out_dir: Path, ctx: RunContext, *, reporter: Reporter, settings=None,
                 tracker: Tracker | None = None):
        cfg = self.cfg = state.config
        self.out, self.ctx, self.reporter, self.settings, self.tracker = out_dir, ctx, reporter, settings, tracker or Tracker()
        self.progress: ckpt.Progress = state.progress or ckpt.Progress()
        checkpoint = state.checkpoint if self.progress.epoch else None
        self.splits = discover(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, settings=settings)
        with ctx.seeded(cfg.seed):
            backbone = create_backbone(cfg.model, weights=cfg.weights)
        backbone.preprocessing, self.progress.input_size = choose_input_size(cfg.input_size, backbone, self.splits.train,
                                                                             self.progress.input_size)
        with ctx.seeded(cfg.seed):
            model = TransferModel(backbone, len(self.splits.classes))
        self.model = model.to(ctx.device).to(memory_format=torch.channels_last)
        s = self.splits
        reporter.message(f"Data: {s.root} — {len(s.classes)} classes, {len(s.train)} train / {len(s.val)} val images"
                         + (f", {len(s.skipped)} unreadable skipped" if s.skipped else ""))
        reporter.message(f"Model: {backbone.name} (weights: {backbone.weights_tag}), {backbone.num_features}-d features, "
                         f"{input_note(self.progress.input_size)}, device {ctx.device}")
        backend, precision = resumed_inference(cfg.backend, cfg.precision, self.progress.inference, ctx.device)
        self.features = FrozenFeatures(self.model.backbone, s, ctx, backend=backend, precision=precision,
                                       batch_size=cfg.batch_size, num_workers=cfg.num_workers, reporter=reporter,
                                       settings=settings)
        self.strategy_name, self.auto = self._resolve_strategy(state)
        if self.auto:
            reporter.message(f"Strategy auto: {self.auto['reason']}", **self.auto)
        self.strategy: Strategy = get_strategy(self.strategy_name, unfreeze_stages=cfg.unfreeze_stages,
                                                frozen_epochs=cfg.frozen_epochs)
        if checkpoint is not None and checkpoint.get("strategy"):
            self.strategy.load_state_dict(checkpoint["strategy"])  # a resumed run continues the same schedule
        self.strategy.on_train_start(self.model)
        self.optimizer, self.scheduler = self._make_optimizer(self.progress.epoch + 1)
        self.param_summary = self._describe_params()
        self.ema = WeightEMA.from_config(cfg)
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint["model"])
            if self.ema is not None and checkpoint.get("ema"):
                self.ema.load_state_dict(checkpoint["ema"], self.model)
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            if self.scheduler is not None and checkpoint.get("scheduler"):
                self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.skipped: dict[str, str] = {**s.skipped, **self.progress.skipped}
        self.cached: CachedFeatures | None = None  # filled by fit on the fast path
        self.head_features: CachedFeatures | None = None  # what the head was fitted on (the LR finder reuses them)
        self.is_cached = self.strategy.is_backbone_frozen and cfg.feature_cache
        # what trains (the head alone on cached features), in DDP on several processes
        self.net = distributed.wrap(self.model.head if self.is_cached else self.model, ctx)
        self.criterion = make_criterion(cfg)
        self.mixer = BatchMixer.from_config(cfg, len(s.classes))  # images only: cached features are not mixed

    def _resolve_strategy(self, state: ckpt.Resume) -> tuple[str, dict | None]:
        if state.strategy:  # resumed: what the run resolved, without probing again
            return state.strategy, state.auto
        if self.cfg.strategy == "auto":
            decision = self.features.probe(self.cfg.seed)
            return decision.strategy, decision.to_dict()
        return get_strategy(self.cfg.strategy, unfreeze_stages=self.cfg.unfreeze_stages,
                                frozen_epochs=self.cfg.frozen_epochs).name, None

    def _describe_params(self) -> dict[str, Any]:
        params = list(self.model.parameters())
        summary = {
            "trainable": sum(p.numel() for p in params if p.requires_grad), "total": sum(p.numel() for p in params),
            "groups": [{"name": g.get("name", f"group{i}"), "lr": g["initial_lr"] if "initial_lr" in g else g["lr"],
                        "params": sum(p.numel() for p in g["params"])} for i, g in enumerate(self.optimizer.param_groups)],
        }
        self.reporter.message(
            f"Strategy: {self.strategy!r} — trainable {summary['trainable']:,} / {summary['total']:,} parameters; groups: "
            + ", ".join(f"{g['name']} lr={g['lr']:g} ({g['params']:,})" for g in summary["groups"]))
        return summary

    # -- optimisation ---------------------------------------------------------------------------
    def _make_optimizer(self, epoch: int, previous: torch.optim.Optimizer | None = None):
        return make_optimizer(self.strategy, self.model, self.cfg, epoch, previous)

    def _epoch_batches(self, n: int, epoch: int) -> list[list[int]]:
        perm = torch.randperm(n, generator=self.ctx.generator(epoch_seed(self.cfg.seed, epoch))).tolist()
        bs = self.cfg.batch_size
        return distributed.shard_batches([perm[i: i + bs] for i in range(0, n, bs)], self.ctx)

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self) -> Run:
        cfg, p, reporter = self.cfg, self.progress, self.reporter
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.write_config(self.out, cfg, strategy=self.strategy_name, auto=self.auto)
        self.tracker.start(self._meta(), epoch=p.epoch)
        if p.epoch:
            reporter.message(f"Resuming {self.out} from epoch {p.epoch + 1} (best so far {p.best_acc:.4f} at epoch "
                             f"{p.best_epoch}).")
        t0, elapsed_before = time.perf_counter(), p.train_seconds
        new_run = p.epoch == 0
        fitted_only = self.prepare_start()
        if cfg.lr == "auto" and new_run:
            from .lr_sweep import apply_auto_lr

            cfg = apply_auto_lr(self, fitted_only)
        self.head_features = None  # only the LR finder reuses them; an image run need not hold them in memory
        stopped_early = False
        for epoch in range(p.epoch + 1, (p.epoch if fitted_only else cfg.epochs) + 1):
            if self.strategy.on_epoch_start(self.model, epoch, self.optimizer):
                self.optimizer, self.scheduler = self._make_optimizer(epoch, previous=self.optimizer)
                self.param_summary = self._describe_params()
                self.net = distributed.wrap(self.model, self.ctx)  # DDP registers the trainable parameters when built
            lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}  # this epoch's: the scheduler steps at its end
            with self.ctx.seeded(epoch_seed(cfg.seed, epoch)):  # augmentation, dropout, worker seeds
                row = self._run_epoch(epoch)
            p.epoch = epoch
            p.history.append(row)
            improved = row["val_accuracy"] > p.best_acc
            if improved:
                p.best_acc, p.best_epoch, p.bad_epochs = row["val_accuracy"], epoch, 0
                with averaged(self.ema, self.model):  # what was validated is what is saved
                    if self.ctx.is_main:
                        save_model(self.model, self.out, self._meta())
            else:
                p.bad_epochs += 1
            reporter.message(f"epoch {epoch}/{cfg.epochs}  train_loss {row['train_loss']:.4f}  train_acc "
                             f"{row['train_accuracy']:.4f}  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}  "
                             f"{row['seconds']:.1f}s" + ("  *best" if improved else ""), **row, is_best=improved)
            if self.ctx.is_main:
                ckpt.write_history(self.out, p.history)
            self.tracker.log_epoch(row, learning_rates=lrs)
            self.skipped = distributed.merged(self.ctx, self.skipped)  # each process met the unreadable files of its shard
            p.skipped = dict(self.skipped)
            p.train_seconds = elapsed_before + time.perf_counter() - t0
            self._checkpoint(epoch)
            if cfg.patience is not None and p.bad_epochs >= cfg.patience and epoch < cfg.epochs:
                reporter.message(f"Early stopping: no better validation accuracy for {cfg.patience} epochs.")
                stopped_early = True
                break
        return self._finish(elapsed_before + time.perf_counter() - t0, stopped_early)

    def prepare_start(self, *, sweep: bool = False) -> bool:
        """Cache the frozen features (fast path) and fit the head (``head_init="fit"``) on a new run; returns whether the
        fit is the whole training (feature extraction on cached features). ``sweep``: for the LR finder, no such fit."""
        cfg, p = self.cfg, self.progress
        if self.is_cached:
            self.cached = self.features.cache(self._note_skipped)
            p.inference = {k: v for k, v in self.features.info.items() if k in ("backend", "precision")}
        # Feature extraction on cached features is done once the head is fitted (its one "epoch"): epochs of SGD
        # would only move it away from the optimum of the same loss. Fine-tuning starts from the fitted head.
        fitted_only = self.cached is not None and cfg.head_init == "fit"
        if p.epoch == 0 and cfg.head_init == "fit" and not (sweep and fitted_only):
            self.head_features = self.cached or self.features.cache(self._note_skipped)
            self._fit_head(self.head_features, epoch=int(fitted_only))
        return fitted_only

    def _fit_head(self, feats: CachedFeatures, *, epoch: int) -> None:
        from .head_fit import fit_head

        fit_head(self, feats, epoch=epoch)

    def _checkpoint(self, epoch: int) -> None:
        if self.ctx.is_main:  # the unwrapped model's weights: no DDP "module." prefix, loadable on any process count
            ckpt.save_checkpoint(self.out, self.progress, model=self.model, optimizer=self.optimizer,
                                 scheduler=self.scheduler, strategy=self.strategy, ema=self.ema)
        distributed.barrier(self.ctx)  # the next epoch starts once the checkpoint of this one is on disk

    def _run_epoch(self, epoch: int) -> dict[str, Any]:
        t_epoch = time.perf_counter()
        if self.cached is not None:
            train_loss, train_acc, n_seen = distributed.mean_over_ranks(self.ctx, *self._train_epoch_cached(epoch))
            t_val = time.perf_counter()
            with torch.no_grad(), averaged(self.ema, self.model):
                self.model.head.eval()
                val = loss_and_accuracy(self.model.head(self.cached.val), self.cached.val_labels)
        else:
            train_loss, train_acc, n_seen = distributed.mean_over_ranks(self.ctx, *self._train_epoch(epoch))
            t_val = time.perf_counter()
            with averaged(self.ema, self.model):
                val = loss_and_accuracy(*self._predict(self.splits.val))
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        if self.scheduler is not None:
            self.scheduler.step()
        seconds = time.perf_counter() - t_epoch
        train_phase = t_val - t_epoch
        return {
            "epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc, "val_loss": val["loss"],
            "val_accuracy": val["accuracy"], "lr_head": lrs[0], "lr_backbone": lrs[1] if len(lrs) > 1 else 0.0,
            "seconds": seconds, "train_seconds": train_phase, "val_seconds": seconds - train_phase,
            # training throughput: images through forward + backward per second of the training phase
            "images_per_s": n_seen / train_phase if train_phase > 0 else 0.0,
        }

    def _train_epoch_cached(self, epoch: int) -> tuple[float, float, int]:
        opt, feats = self.optimizer, self.cached
        self.model.head.train()
        total_loss, correct, n = 0.0, 0, 0
        for batch in self._epoch_batches(len(feats.train), epoch):
            idx = torch.tensor(batch, device=self.ctx.device)
            x, y = feats.train[idx], feats.train_labels[idx]
            loss, logits = train_step(self.net, opt, self.criterion, x, y, None)
            if self.ema is not None:  # the average is over the whole model's weights (the backbone's stay constant)
                self.ema.update(self.model)
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        return total_loss / max(n, 1), correct / max(n, 1), n

    def _train_epoch(self, epoch: int) -> tuple[float, float, int]:
        cfg, model, device = self.cfg, self.model, self.ctx.device
        loader = self.train_loader(epoch)
        self.set_train_mode()
        amp_dtype = training_autocast_dtype(device, cfg.precision, model)
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        total_loss, correct, n = 0.0, 0, 0
        with self.reporter.task("epoch", total=len(self.splits.train), description=f"epoch {epoch}/{cfg.epochs}") as task:
            for x, y, _idx, bad in loader:
                self._note_skipped(self.splits.train, dict(bad))
                if x is not None:
                    x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                    y = y.to(device, non_blocking=True)
                    loss, logits = train_step(self.net, self.optimizer, self.criterion, x, y, amp_dtype, scaler,
                                              mixer=self.mixer, ema=self.ema)
                    total_loss += loss.item() * len(y)
                    correct += int((logits.argmax(1) == y).sum())
                    n += len(y)
                task.advance((0 if x is None else len(x)) + len(bad))
        if n == 0:
            raise DataError(f"None of the training images under {self.splits.root} could be decoded. Check the files.")
        return total_loss / n, correct / n, n

    def set_train_mode(self) -> None:
        """The strategy's train/eval modes, then BatchNorm statistics frozen (``freeze_bn``)."""
        self.strategy.set_train_mode(self.model)
        if self.cfg.freeze_bn:
            freeze_batchnorm(self.model)

    def train_loader(self, epoch: int):
        """The training images of ``epoch``: its shuffle, the recipe's augmentation, decoded in worker processes."""
        cfg = self.cfg
        return make_loader(self.splits.train, train_transform(self.model.preprocessing, cfg), batch_size=cfg.batch_size,
                           device=self.ctx.device, num_workers=cfg.num_workers, settings=self.settings,
                           batch_sampler=self._epoch_batches(len(self.splits.train), epoch),
                           generator=self.ctx.generator(epoch_seed(cfg.seed, epoch)))

    def _predict(self, images: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels of ``images``' readable images (each process predicts its share)."""
        return distributed.predict_sharded(self.ctx, self.model, images, lambda part: predict_logits(
            self.model, part, batch_size=max(self.cfg.batch_size, 64), device=self.ctx.device,
            num_workers=self.cfg.num_workers, reporter=self.reporter, settings=self.settings,
            on_skip=lambda s: self._note_skipped(part, s)))

    def _note_skipped(self, images: ImageSet, skipped: dict[int, str]) -> None:
        for i, reason in skipped.items():
            p = str(images.paths[i])
            if p not in self.skipped:
                log.warning("Skipped unreadable image %s: %s", p, reason)
            self.skipped[p] = reason

    # -- results ----------------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {"classes": self.splits.classes, "strategy": self.strategy.describe(), "auto": self.auto,
                "weights_source": self.cfg.weights, "parameters": self.param_summary, "config": self.cfg.to_dict(),
                "lr_find": self.progress.lr_find or None}

    def _finish(self, train_seconds: float, stopped_early: bool) -> Run:
        from safetensors.torch import load_file

        from ..report.figures import plot_confusion_matrix

        p = self.progress
        self.model.load_state_dict(load_file(str(self.out / "model.safetensors")))
        self.model.eval()
        if self.cached is not None:
            with torch.no_grad():
                logits, labels = self.model.head(self.cached.val).float().cpu(), self.cached.val_labels.cpu()
        else:
            logits, labels = self._predict(self.splits.val)
        if not self.ctx.is_main:  # rank 0 writes the results; the others return the run it wrote
            return distributed.after_main(self.ctx, lambda: Run.load(self.out))
        metrics = classification_metrics(logits, labels, self.splits.classes)
        cm = metrics.pop("confusion_matrix")
        metrics.update({
            "val_accuracy": metrics.pop("accuracy"), "val_loss": metrics.pop("loss"), "best_epoch": p.best_epoch,
            "epochs_run": len(p.history), "stopped_early": stopped_early, "train_seconds": train_seconds,
            "skipped_files": len(self.skipped), "skipped": self.skipped, "strategy": self.strategy.describe(),
            "auto": self.auto, "parameters": self.param_summary, "dataset": self.splits.summary(),
            "confusion_matrix": cm, "device": str(self.ctx.device), "model": self.cfg.model,
            "inference": self.features.info if self.cached is not None else None, "head_fit": p.head_fit or None,
            "lr_find": p.lr_find or None, "input_size": p.input_size, "ema": self.cfg.ema or None,
            "leakage": split_leakage(self.splits, self.reporter),
        })
        metrics["dataset"]["skipped_files"] = len(self.skipped)
        write_json_atomic(self.out / "metrics.json", metrics)
        plot_confusion_matrix(cm, self.splits.classes, self.out / "confusion_matrix.png")
        self.tracker.finish(metrics)
        ckpt.mark_finished(self.out, len(p.history))
        distributed.barrier(self.ctx)
        self.reporter.message(f"Best epoch {p.best_epoch}: val_acc {metrics['val_accuracy']:.4f}, val_loss "
                              f"{metrics['val_loss']:.4f}; {train_seconds:.1f}s. Run saved to {self.out}",
                              best_epoch=p.best_epoch, val_accuracy=metrics["val_accuracy"], val_loss=metrics["val_loss"],
                              train_seconds=train_seconds, run=str(self.out))
        return Run.load(self.out)
