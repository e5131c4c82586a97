"""Training: the loop, checkpoints and resume, the cached-feature fast path, and ``auto``.

The public entry point is :func:`train`, which returns a :class:`~transferkit.run.Run`.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from .._io import atomic_path, remove_stale_temps, write_json_atomic, write_text_atomic
from .._ui import UI
from ..backbones import create_backbone
from ..data.images import DatasetSplits, ImageSet, discover
from ..data.loading import make_loader
from ..embed.features import FeatureBatch, compute_features
from ..errors import ConfigError, DataError, RunError
from ..inference.devices import resolve_device
from ..inference.policy import autocast_for, training_autocast_dtype
from ..strategies.builtin import AutoDecision, choose_auto, get_strategy, knn_probe_accuracy
from .model import TransferModel, save_model

log = logging.getLogger("transferkit")

OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("cosine", "none")
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
#: Images per class (at most) in the ``auto`` probe sample.
PROBE_PER_CLASS = 60


@dataclass
class TrainConfig:
    """Every option that shapes a training run; saved as ``config.json`` so ``--resume`` repeats it."""

    data: str
    model: str = "resnet18"
    strategy: str = "auto"
    epochs: int = 5
    batch_size: int = 32
    seed: int = 0
    weights: str = "default"
    head_lr: float = 1e-3
    backbone_lr: float = 1e-4
    optimizer: str = "adamw"
    scheduler: str = "cosine"
    weight_decay: float = 1e-4
    patience: int | None = None
    device: str = "auto"
    unfreeze_stages: int = 1
    val_fraction: float = 0.2
    num_workers: int | None = None
    feature_cache: bool = True
    augment: bool = True
    backend: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        def positive(name, value, kind=float):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"`{name}` must be a positive {kind.__name__}; got {value!r}.")

        positive("epochs", self.epochs, int)
        positive("batch_size", self.batch_size, int)
        positive("head_lr", self.head_lr)
        positive("backbone_lr", self.backbone_lr)
        if self.optimizer not in OPTIMIZERS:
            from ..errors import unknown_name

            raise unknown_name("optimizer", self.optimizer, OPTIMIZERS)
        if self.scheduler not in SCHEDULERS:
            from ..errors import unknown_name

            raise unknown_name("scheduler", self.scheduler, SCHEDULERS)
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"`patience` must be an int >= 1 (or None to disable early stopping); got {self.patience!r}.")
        from ..inference.runner import BACKENDS, PRECISIONS

        if self.backend not in BACKENDS:
            raise ConfigError(f"`backend` must be one of {', '.join(BACKENDS)}; got {self.backend!r}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"`precision` must be one of {', '.join(PRECISIONS)}; got {self.precision!r}.")
        if self.weight_decay < 0:
            raise ConfigError(f"`weight_decay` must be >= 0; got {self.weight_decay!r}.")


def _default_out() -> Path:
    return Path("runs") / datetime.now().strftime("train-%Y%m%d-%H%M%S")


def train(
    data: str | os.PathLike,
    *,
    model: str = "resnet18",
    strategy: str = "auto",
    epochs: int = 5,
    batch_size: int = 32,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    weights: str | os.PathLike = "default",
    head_lr: float = 1e-3,
    backbone_lr: float = 1e-4,
    optimizer: str = "adamw",
    scheduler: str = "cosine",
    weight_decay: float = 1e-4,
    patience: int | None = None,
    device: str = "auto",
    unfreeze_stages: int = 1,
    val_fraction: float = 0.2,
    num_workers: int | None = None,
    feature_cache: bool = True,
    augment: bool = True,
    backend: str = "auto",
    precision: str = "auto",
    resume: bool = False,
    quiet: bool = False,
):
    """Train a classifier on an image folder by transfer learning.

    Args:
        data: folder with ``train/`` and ``val/`` class folders, or a folder of class folders
            (split by ``val_fraction`` and ``seed``).
        model: backbone name (see ``transferkit models``).
        strategy: ``auto``, ``feature-extraction``, ``partial`` or ``full``.
        epochs: maximum epochs. The best epoch by validation accuracy is kept.
        batch_size: images per step.
        out: run directory (default ``runs/train-<timestamp>``).
        seed: seed for splits, head initialisation, shuffling and augmentation.
        weights: ``default`` (pretrained), ``none`` (random init, explicit), or a state_dict file.
        head_lr: learning rate of the new head.
        backbone_lr: learning rate of unfrozen backbone layers.
        optimizer: ``adamw`` or ``sgd`` (momentum 0.9).
        scheduler: ``cosine`` (per epoch) or ``none``.
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        patience: stop after this many epochs without a better validation accuracy.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        unfreeze_stages: stages unfrozen by ``partial``.
        val_fraction: validation share when ``data`` has no ``val/`` folder.
        num_workers: image-decoding processes (default: cores - 1).
        feature_cache: with a frozen backbone, compute features once and train the head on them.
        augment: random resized crop + flip while fine-tuning (the cached path uses centre crops).
        backend: inference backend for frozen features: ``auto`` (OpenVINO on CPU when installed),
            ``torch`` or ``openvino``.
        precision: ``auto``: frozen features in bf16 only where they stay within cosine 0.999 of fp32,
            fine-tuning with bf16 autocast on CUDA and on CPUs with native bf16 (on the CPU not when
            most depthwise convolutions train, where bf16 measured slower); ``fp32``; ``bf16``.
        resume: continue the run in ``out`` from its last completed epoch (frozen features with the backend
            and precision the run used, as its checkpoint records).
        quiet: no progress bars or messages.

    Returns:
        The finished :class:`~transferkit.run.Run`.

    Raises:
        DataError, ConfigError, WeightsUnavailableError, RunError: user-fixable problems.
    """
    ui = UI(quiet)
    out_dir = Path(out) if out is not None else _default_out()
    if resume:
        cfg, state = _load_resume(out_dir)
    else:
        if out_dir.exists() and any((out_dir / f).exists() for f in (CONFIG_FILE, CHECKPOINT_FILE, "model.json")):
            raise RunError(f"{out_dir} already holds a run. Continue it with --resume, or choose another --out.")
        cfg = TrainConfig(
            data=str(data), model=model, strategy=strategy, epochs=epochs, batch_size=batch_size, seed=seed,
            weights=str(weights), head_lr=head_lr, backbone_lr=backbone_lr, optimizer=optimizer, scheduler=scheduler,
            weight_decay=weight_decay, patience=patience, device=device, unfreeze_stages=unfreeze_stages,
            val_fraction=val_fraction, num_workers=num_workers, feature_cache=feature_cache, augment=augment,
            backend=backend, precision=precision,
        )
        state = None
    cfg.validate()
    return _Trainer(cfg, out_dir, ui, state).fit()


def _load_resume(out_dir: Path) -> tuple[TrainConfig, dict | None]:
    import json

    cfg_path = out_dir / CONFIG_FILE
    if not cfg_path.exists():
        raise RunError(f"Nothing to resume in {out_dir}: {CONFIG_FILE} is missing. Start a new run without --resume.")
    try:
        raw = json.loads(cfg_path.read_text())
        cfg = TrainConfig(**raw["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"Cannot resume {out_dir}: corrupt {CONFIG_FILE} ({exc}). Start a new run.") from None
    if raw.get("resolved_strategy"):
        cfg._resolved = raw  # type: ignore[attr-defined]
    for p in remove_stale_temps(out_dir):  # a run killed while saving leaves its half-written file
        log.info("Removed %s, left by the interrupted run.", p.name)
    state = None
    ckpt = out_dir / CHECKPOINT_FILE
    if ckpt.exists():
        from .._io import UnreadableFileError, torch_load_tensors

        try:
            state = torch_load_tensors(ckpt, remedy="Delete it and start a new run, or restore the run directory from a backup.")
        except UnreadableFileError as exc:
            raise RunError(f"Cannot resume {out_dir}: corrupt {CHECKPOINT_FILE} ({exc}). Start a new run.") from None
        if not isinstance(state, dict):
            raise RunError(f"Cannot resume {out_dir}: {CHECKPOINT_FILE} is not a transferkit checkpoint. Start a new run.")
    return cfg, state


def train_step(model, opt, criterion, x, y, amp_dtype: torch.dtype | None, scaler=None):
    """One optimisation step under autocast (``amp_dtype`` None: fp32); returns ``(loss, logits)``.

    ``scaler`` is a ``GradScaler`` for fp16 (see :func:`~transferkit.engine.training_autocast_dtype`).
    """
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = model(x)
    loss = criterion(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return loss, logits


class _Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: Path, ui: UI, state: dict | None):
        self.cfg = cfg
        self.out = out_dir
        self.ui = ui
        self.state = state

    # -- setup -----------------------------------------------------------------------------
    def fit(self):
        from .run import Run

        cfg, ui = self.cfg, self.ui
        if self.state is not None and self.state.get("finished"):
            ui.info(f"Run {self.out} is already complete.")
            return Run.load(self.out)
        self.device = resolve_device(cfg.device)
        splits = discover(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed)
        self.splits = splits
        torch.manual_seed(cfg.seed)
        backbone = create_backbone(cfg.model, weights=cfg.weights)
        torch.manual_seed(cfg.seed)
        model = TransferModel(backbone, len(splits.classes))
        self.model = model.to(self.device).to(memory_format=torch.channels_last)
        ui.info(f"Data: {splits.root} — {len(splits.classes)} classes, {len(splits.train)} train / {len(splits.val)} val images"
                + (f", {len(splits.skipped)} unreadable skipped" if splits.skipped else ""))
        ui.info(f"Model: {backbone.name} (weights: {backbone.weights_tag}), {backbone.num_features}-d features, device {self.device}")

        resolved = getattr(cfg, "_resolved", None)
        if resolved:
            self.strategy_name = resolved["resolved_strategy"]
            self.auto = resolved.get("auto")
        elif cfg.strategy == "auto":
            decision = self._auto_decide()
            self.strategy_name, self.auto = decision.strategy, decision.to_dict()
        else:
            self.strategy_name = get_strategy(cfg.strategy, unfreeze_stages=cfg.unfreeze_stages).name
            self.auto = None
        if self.auto:
            ui.info(f"Strategy auto: {self.auto['reason']}")
        self.strategy = get_strategy(self.strategy_name, unfreeze_stages=cfg.unfreeze_stages)
        self.strategy.apply(self.model)
        self.groups = self.strategy.param_groups(self.model, head_lr=cfg.head_lr, backbone_lr=cfg.backbone_lr)
        n_total = sum(p.numel() for p in self.model.parameters())
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.param_summary = {
            "trainable": n_train, "total": n_total,
            "groups": [{"name": g["name"], "lr": g["lr"], "params": sum(p.numel() for p in g["params"])} for g in self.groups],
        }
        ui.info(f"Strategy: {self.strategy!r} — trainable {n_train:,} / {n_total:,} parameters; groups: "
                + ", ".join(f"{g['name']} lr={g['lr']:g} ({g['params']:,})" for g in self.param_summary["groups"]))
        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.out / CONFIG_FILE, {
            "config": asdict(cfg), "resolved_strategy": self.strategy_name, "auto": self.auto,
            "transferkit_version": __version__,
        })
        self.cached = self.strategy.is_backbone_frozen and cfg.feature_cache
        return self._loop()

    def _runner(self):
        """One inference runner for the frozen backbone, shared by the probe and the feature cache."""
        from ..inference.runner import InferenceRunner

        if getattr(self, "_inference_runner", None) is None:
            bb = self.model.backbone
            backend, precision = self._resumed_inference()
            self._inference_runner = InferenceRunner(bb, input_size=bb.preprocessing.input_size, device=self.device,
                                                     backend=backend, precision=precision,
                                                     expected_items=len(self.splits.train) + len(self.splits.val),
                                                     preprocessing=bb.preprocessing)
        return self._inference_runner

    def _resumed_inference(self) -> tuple[str, str]:
        """Backend and precision for the frozen features: the config's, except that a resumed run whose
        checkpoint recorded what ``auto`` chose repeats that choice. Otherwise a resume could compute
        its features differently from the epochs before it (the choice depends on the conversion cache
        and on the remembered bf16 verdict, which other jobs change), and not reproduce the
        uninterrupted run. A recorded OpenVINO backend that is no longer installed, or bf16 on a CPU without
        native bf16 (a resume on another machine), is left to ``auto``."""
        from ..inference.runner import cpu_has_bf16, openvino_available

        backend, precision = self.cfg.backend, self.cfg.precision
        used = (self.state or {}).get("inference")
        used = used if isinstance(used, dict) else {}
        if backend == "auto" and (used.get("backend") == "torch" or (used.get("backend") == "openvino" and openvino_available())):
            backend = used["backend"]
        if precision == "auto" and backend == used.get("backend") and (
                used.get("precision") == "fp32" or (used.get("precision") == "bf16" and (self.device.type != "cpu" or cpu_has_bf16()))):
            precision = used["precision"]
        return backend, precision

    def _auto_decide(self) -> AutoDecision:
        """Probe how well the frozen pretrained features separate the classes (LOO kNN on a sample)."""
        train = self.splits.train
        per_class: dict[int, list[int]] = {}
        g = torch.Generator().manual_seed(self.cfg.seed)
        for i in torch.randperm(len(train), generator=g).tolist():
            per_class.setdefault(train.labels[i], [])
            if len(per_class[train.labels[i]]) < PROBE_PER_CLASS:
                per_class[train.labels[i]].append(i)
        sample = sorted(i for v in per_class.values() for i in v)
        with self.ui.progress() as prog:
            fb = compute_features(self.model.backbone, train.subset(sample), batch_size=self.cfg.batch_size * 2,
                                  device=self.device, num_workers=self.cfg.num_workers, progress=prog,
                                  description="auto: probing features", runner=self._runner())
        self._probe = {sample[int(i)]: fb.features[j] for j, i in enumerate(fb.indices.tolist())}
        labels = fb.labels.numpy()
        if len(labels) < 3:
            raise DataError("Too few readable training images to choose a strategy automatically; pass --strategy explicitly.")
        acc = knn_probe_accuracy(fb.features.numpy(), labels)
        import numpy as np

        chance = float(np.bincount(labels).max() / len(labels))
        return choose_auto(len(train), acc, chance, probe_samples=len(labels))

    # -- optimisation ---------------------------------------------------------------------------
    def _make_optimizer(self):
        cfg = self.cfg
        groups = [{"params": g["params"], "lr": g["lr"]} for g in self.groups]
        if cfg.optimizer == "adamw":
            opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.SGD(groups, momentum=0.9, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.scheduler == "cosine" else None
        return opt, sched

    def _epoch_batches(self, n: int, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        bs = self.cfg.batch_size
        return [perm[i : i + bs] for i in range(0, n, bs)]

    def _loop(self):
        from .run import Run

        cfg, ui, model = self.cfg, self.ui, self.model
        opt, sched = self._make_optimizer()
        criterion = nn.CrossEntropyLoss()
        history: list[dict[str, Any]] = []
        best_acc, best_epoch, bad_epochs, start_epoch = -1.0, 0, 0, 1
        self.skipped: dict[str, str] = dict(self.splits.skipped)
        elapsed_before = 0.0
        if self.state is not None:
            model.load_state_dict(self.state["model"])
            opt.load_state_dict(self.state["optimizer"])
            if sched is not None and self.state.get("scheduler"):
                sched.load_state_dict(self.state["scheduler"])
            history = list(self.state["history"])
            best_acc, best_epoch = float(self.state["best_acc"]), int(self.state["best_epoch"])
            bad_epochs, start_epoch = int(self.state["bad_epochs"]), int(self.state["epoch"]) + 1
            self.skipped.update(self.state.get("skipped", {}))
            elapsed_before = float(self.state.get("train_seconds", 0.0))
            ui.info(f"Resuming {self.out} from epoch {start_epoch} (best so far {best_acc:.4f} at epoch {best_epoch}).")
        t0 = time.perf_counter()
        if self.cached:
            self._cache_features()
        stopped_early = False
        for epoch in range(start_epoch, cfg.epochs + 1):
            torch.manual_seed(cfg.seed * 1_000_003 + epoch)
            t_epoch = time.perf_counter()
            if self.cached:
                train_loss, train_acc, n_seen = self._train_epoch_cached(epoch, opt, criterion)
                t_val = time.perf_counter()
                val = self._eval_cached(criterion)
            else:
                train_loss, train_acc, n_seen = self._train_epoch(epoch, opt, criterion)
                t_val = time.perf_counter()
                val = self._eval_images(self.splits.val, criterion)
            lrs = [g["lr"] for g in opt.param_groups]
            if sched is not None:
                sched.step()
            seconds = time.perf_counter() - t_epoch
            train_phase = t_val - t_epoch
            row = {
                "epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc, "val_loss": val["loss"],
                "val_accuracy": val["accuracy"], "lr_head": lrs[0], "lr_backbone": lrs[1] if len(lrs) > 1 else 0.0,
                "seconds": seconds, "train_seconds": train_phase, "val_seconds": seconds - train_phase,
                # training throughput: images through forward + backward per second of the training phase
                "images_per_s": n_seen / train_phase if train_phase > 0 else 0.0,
            }
            history.append(row)
            improved = val["accuracy"] > best_acc
            if improved:
                best_acc, best_epoch, bad_epochs = val["accuracy"], epoch, 0
                self._save_best()
            else:
                bad_epochs += 1
            ui.info(f"epoch {epoch}/{cfg.epochs}  train_loss {train_loss:.4f}  train_acc {train_acc:.4f}  "
                    f"val_loss {val['loss']:.4f}  val_acc {val['accuracy']:.4f}  {seconds:.1f}s"
                    + ("  *best" if improved else ""))
            self._write_history(history)
            self._checkpoint(epoch, opt, sched, history, best_acc, best_epoch, bad_epochs,
                             elapsed_before + time.perf_counter() - t0)
            if cfg.patience is not None and bad_epochs >= cfg.patience and epoch < cfg.epochs:
                ui.info(f"Early stopping: no better validation accuracy for {cfg.patience} epochs.")
                stopped_early = True
                break
        train_seconds = elapsed_before + time.perf_counter() - t0
        return self._finish(history, best_epoch, train_seconds, stopped_early, Run)

    def _cache_features(self) -> None:
        cfg = self.cfg
        memo: dict[int, torch.Tensor] = getattr(self, "_probe", {})
        todo = [i for i in range(len(self.splits.train)) if i not in memo]
        with self.ui.progress() as prog:
            part = compute_features(self.model.backbone, self.splits.train.subset(todo), batch_size=max(cfg.batch_size, 64),
                                    device=self.device, num_workers=cfg.num_workers, progress=prog, description="features (train)",
                                    runner=self._runner())
            # merge with the features already computed by the ``auto`` probe, in dataset order
            feats = dict(memo)
            feats.update({todo[int(i)]: part.features[j] for j, i in enumerate(part.indices.tolist())})
            order = sorted(feats)
            tr = FeatureBatch(
                torch.stack([feats[i] for i in order]) if order else torch.empty(0, self.model.backbone.num_features),
                torch.tensor([self.splits.train.labels[i] for i in order], dtype=torch.long),
                torch.tensor(order, dtype=torch.long), {todo[i]: r for i, r in part.skipped.items()}, part.seconds)
            va = compute_features(self.model.backbone, self.splits.val, batch_size=max(cfg.batch_size, 64), device=self.device,
                                  num_workers=cfg.num_workers, progress=prog, description="features (val)", runner=self._runner())
        self._note_skipped(self.splits.train, tr.skipped)
        self._note_skipped(self.splits.val, va.skipped)
        if len(tr.features) == 0:
            raise DataError(f"None of the training images under {self.splits.root} could be decoded. Check the files.")
        n_new = len(part.features) + len(va.features)
        info = self._runner().info
        self.ui.info(f"Cached frozen features of {len(tr.features) + len(va.features)} images ({n_new} computed in "
                     f"{part.seconds + va.seconds:.1f}s, {n_new / max(part.seconds + va.seconds, 1e-9):.0f} img/s, "
                     f"{info.get('backend')} {info.get('precision')})")
        self.inference_info = dict(info)
        self.train_feats, self.train_labels = tr.features.to(self.device), tr.labels.to(self.device)
        self.val_feats, self.val_labels = va.features.to(self.device), va.labels.to(self.device)

    def _note_skipped(self, images: ImageSet, skipped: dict[int, str]) -> None:
        for i, reason in skipped.items():
            p = str(images.paths[i])
            if p not in self.skipped:
                log.warning("Skipped unreadable image %s: %s", p, reason)
            self.skipped[p] = reason

    def _train_epoch_cached(self, epoch, opt, criterion):
        head = self.model.head
        head.train()
        total_loss, correct, n = 0.0, 0, 0
        for batch in self._epoch_batches(len(self.train_feats), epoch):
            idx = torch.tensor(batch, device=self.device)
            x, y = self.train_feats[idx], self.train_labels[idx]
            logits = head(x)
            loss = criterion(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        return total_loss / max(n, 1), correct / max(n, 1), n

    @torch.no_grad()
    def _eval_cached(self, criterion) -> dict[str, float]:
        self.model.head.eval()
        logits = self.model.head(self.val_feats)
        return {"loss": float(criterion(logits, self.val_labels)), "accuracy": float((logits.argmax(1) == self.val_labels).float().mean())}

    def _train_epoch(self, epoch, opt, criterion):
        cfg, model, device = self.cfg, self.model, self.device
        pre = model.preprocessing
        transform = pre.train_transform() if cfg.augment else pre.eval_transform()
        batches = self._epoch_batches(len(self.splits.train), epoch)
        loader = make_loader(self.splits.train, transform, batch_size=cfg.batch_size, device=device,
                             num_workers=cfg.num_workers, batch_sampler=batches)
        self.strategy.set_train_mode(model)
        amp_dtype = training_autocast_dtype(device, cfg.precision, model)
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        total_loss, correct, n = 0.0, 0, 0
        with self.ui.progress() as prog:
            task = prog.add_task(f"epoch {epoch}/{cfg.epochs}", total=len(self.splits.train)) if prog else None
            for x, y, _idx, bad in loader:
                self._note_skipped(self.splits.train, dict(bad))
                if x is not None:
                    x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                    y = y.to(device, non_blocking=True)
                    loss, logits = train_step(model, opt, criterion, x, y, amp_dtype, scaler)
                    total_loss += loss.item() * len(y)
                    correct += int((logits.argmax(1) == y).sum())
                    n += len(y)
                if task is not None:
                    prog.advance(task, (0 if x is None else len(x)) + len(bad))
        if n == 0:
            raise DataError(f"None of the training images under {self.splits.root} could be decoded. Check the files.")
        return total_loss / n, correct / n, n

    @torch.no_grad()
    def _eval_images(self, images: ImageSet, criterion) -> dict[str, float]:
        logits, labels = predict_logits(self.model, images, batch_size=max(self.cfg.batch_size, 64), device=self.device,
                                        num_workers=self.cfg.num_workers, ui=self.ui, on_skip=lambda s: self._note_skipped(images, s))
        if len(labels) == 0:
            return {"loss": float("nan"), "accuracy": 0.0}
        return {"loss": float(criterion(logits, labels)), "accuracy": float((logits.argmax(1) == labels).float().mean())}

    # -- persistence --------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {
            "classes": self.splits.classes,
            "strategy": self.strategy.describe(),
            "auto": self.auto,
            "weights_source": self.cfg.weights,
            "parameters": self.param_summary,
            "config": asdict(self.cfg),
        }

    def _save_best(self) -> None:
        save_model(self.model, self.out, self._meta())

    def _checkpoint(self, epoch, opt, sched, history, best_acc, best_epoch, bad_epochs, train_seconds) -> None:
        state = {
            "epoch": epoch, "model": self.model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else {}, "history": history, "best_acc": best_acc,
            "best_epoch": best_epoch, "bad_epochs": bad_epochs, "skipped": self.skipped, "train_seconds": train_seconds,
            # what `auto` chose for the frozen features, repeated on --resume (see _resumed_inference)
            "inference": {k: v for k, v in (getattr(self, "inference_info", None) or {}).items() if k in ("backend", "precision")},
        }
        with atomic_path(self.out / CHECKPOINT_FILE) as tmp:
            torch.save(state, str(tmp))

    def _write_history(self, history: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        fields = list(dict.fromkeys(k for row in history for k in row))  # rows of a resumed older run may lack columns
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        write_text_atomic(self.out / "history.csv", buf.getvalue())

    def _finish(self, history, best_epoch, train_seconds, stopped_early, Run):

        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(self.out / "model.safetensors")))
        self.model.eval()
        if self.cached:
            with torch.no_grad():
                logits, labels = self.model.head(self.val_feats).float().cpu(), self.val_labels.cpu()
        else:
            logits, labels = predict_logits(self.model, self.splits.val, batch_size=max(self.cfg.batch_size, 64), device=self.device,
                                            num_workers=self.cfg.num_workers, ui=self.ui,
                                            on_skip=lambda s: self._note_skipped(self.splits.val, s))
        metrics = classification_metrics(logits, labels, self.splits.classes)
        cm = metrics.pop("confusion_matrix")
        metrics.update({
            "val_accuracy": metrics.pop("accuracy"), "val_loss": metrics.pop("loss"), "best_epoch": best_epoch,
            "epochs_run": len(history), "stopped_early": stopped_early, "train_seconds": train_seconds,
            "skipped_files": len(self.skipped), "skipped": self.skipped, "strategy": self.strategy.describe(),
            "auto": self.auto, "parameters": self.param_summary, "dataset": self.splits.summary(),
            "confusion_matrix": cm, "device": str(self.device), "model": self.cfg.model,
            "inference": getattr(self, "inference_info", None),
        })
        metrics["dataset"]["skipped_files"] = len(self.skipped)
        write_json_atomic(self.out / "metrics.json", metrics)
        from ..report.html import plot_confusion_matrix

        plot_confusion_matrix(cm, self.splits.classes, self.out / "confusion_matrix.png")
        ckpt = self.out / CHECKPOINT_FILE
        with atomic_path(ckpt) as tmp:
            torch.save({"finished": True, "epoch": len(history)}, str(tmp))
        self.ui.info(f"Best epoch {best_epoch}: val_acc {metrics['val_accuracy']:.4f}, val_loss {metrics['val_loss']:.4f}; "
                     f"{train_seconds:.1f}s. Run saved to {self.out}")
        return Run.load(self.out)


@torch.no_grad()
def predict_logits(model, images: ImageSet, *, batch_size: int, device, num_workers=None, ui: UI | None = None,
                   on_skip=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits for every readable image of ``images`` with the model's eval transforms."""
    model.eval()
    pre = model.preprocessing
    loader = make_loader(images, pre.eval_transform(), batch_size=batch_size, device=device, num_workers=num_workers,
                         draft_size=pre.resize_size)
    outs, labels = [], []
    ui = ui or UI(True)
    with ui.progress() as prog:
        task = prog.add_task("evaluating", total=len(images)) if prog else None
        for x, y, _idx, bad in loader:
            if bad and on_skip is not None:
                on_skip(dict(bad))
            if x is not None:
                x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                with autocast_for(device):
                    outs.append(model(x).float().cpu())
                labels.append(y)
            if task is not None:
                prog.advance(task, (0 if x is None else len(x)) + len(bad))
    if not outs:
        return torch.empty(0, model.num_classes), torch.empty(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(labels)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Accuracy, loss, per-class precision/recall/F1 and the confusion matrix."""
    import numpy as np
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    if len(labels) == 0:
        raise DataError("No readable images to evaluate. Check the files of the split.")
    y = labels.numpy()
    pred = logits.argmax(1).numpy()
    loss = float(nn.functional.cross_entropy(logits, labels))
    k = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=k, zero_division=0)
    cm = confusion_matrix(y, pred, labels=k)
    acc = float((pred == y).mean())
    return {
        "accuracy": acc, "loss": loss if math.isfinite(loss) else None, "num_images": int(len(y)),
        "macro_f1": float(np.mean(f)),
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, c in enumerate(classes)},
        "confusion_matrix": cm.tolist(),
    }


def splits_for_run(data, meta: dict) -> DatasetSplits:
    """Discover ``data`` with the split settings the run was trained with."""
    cfg = meta.get("config", {})
    return discover(data, val_fraction=float(cfg.get("val_fraction", 0.2)), seed=int(cfg.get("seed", 0)))
