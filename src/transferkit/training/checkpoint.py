"""A run directory's training files: ``config.json``, ``checkpoint.pt``, ``history.csv``; and resuming.

``checkpoint.pt`` is rewritten atomically after every epoch with everything the next epoch
needs (weights, optimizer, scheduler, strategy state, the loop's counters), so a run killed
at any moment resumes from its last completed epoch and repeats the uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .._io import UnreadableFileError, atomic_path, remove_stale_temps, torch_load_tensors, write_json_atomic, write_text_atomic
from ..errors import CorruptRunError, RunError, UnknownNameError
from .config import TrainConfig

log = logging.getLogger("transferkit")

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.csv"
#: Files whose presence means a folder already holds a run.
RUN_MARKERS = (CONFIG_FILE, CHECKPOINT_FILE, "model.json")


@dataclass
class Progress:
    """The training loop's counters, saved in every checkpoint.

    Attributes:
        epoch: the last completed epoch (0 before the first).
        history: one row per completed epoch (``history.csv``).
        best_acc: the best validation accuracy so far (-1 before the first epoch).
        best_epoch: the epoch that reached it.
        bad_epochs: epochs since it last improved (early stopping).
        skipped: unreadable files seen so far, path -> reason.
        train_seconds: training time of the completed epochs.
        inference: backend and precision of the frozen features, repeated on resume.
        lr_find: what the LR finder suggested and chose (``lr="auto"``), or empty.
        head_fit: how the head was fitted on the frozen features before epoch 1 (``head_init="fit"``), or empty.
        input_size: the input size chosen and why (``input_size="auto"``), repeated on resume.
    """

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    train_seconds: float = 0.0
    inference: dict[str, str] = field(default_factory=dict)
    head_fit: dict[str, Any] = field(default_factory=dict)
    lr_find: dict[str, Any] = field(default_factory=dict)
    input_size: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> Progress:
        return cls(epoch=int(state["epoch"]), history=list(state["history"]), best_acc=float(state["best_acc"]),
                   best_epoch=int(state["best_epoch"]), bad_epochs=int(state["bad_epochs"]),
                   skipped=dict(state.get("skipped", {})), train_seconds=float(state.get("train_seconds", 0.0)),
                   inference=dict(state.get("inference") or {}), head_fit=dict(state.get("head_fit") or {}),
                   lr_find=dict(state.get("lr_find") or {}), input_size=dict(state.get("input_size") or {}))


@dataclass
class Resume:
    """What a run directory holds for :func:`load_resume`.

    Attributes:
        config: the run's saved options.
        strategy: the strategy it resolved (``auto`` already decided), or None.
        auto: ``auto``'s recorded decision, or None.
        checkpoint: the last checkpoint (None if no epoch completed).
    """

    config: TrainConfig
    strategy: str | None = None
    auto: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return bool(self.checkpoint and self.checkpoint.get("finished"))

    @property
    def progress(self) -> Progress | None:
        if self.checkpoint is None or self.finished:
            return None
        try:
            return Progress.from_checkpoint(self.checkpoint)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptRunError(f"Cannot resume: {CHECKPOINT_FILE} is incomplete ({exc}). Start a new run.") from None


def check_new_run_dir(out_dir: Path) -> None:
    """Raises RunError if ``out_dir`` already holds a run."""
    if out_dir.exists() and any((out_dir / f).exists() for f in RUN_MARKERS):
        raise RunError(f"{out_dir} already holds a run. Resume it, or choose another output folder.")


def write_config(out_dir: Path, cfg: TrainConfig, *, strategy: str, auto: dict[str, Any] | None) -> None:
    write_json_atomic(out_dir / CONFIG_FILE, {"config": cfg.to_dict(), "resolved_strategy": strategy, "auto": auto,
                                              "transferkit_version": __version__})


def load_resume(out_dir: Path, *, clean: bool = True) -> Resume:
    """Read the run in ``out_dir`` to continue it; removes the temporary files a killed run left (``clean``: only the
    process that will write there, since another's removal could hit the writer's live temporary file).

    Raises:
        RunError: nothing to resume there.
        CorruptRunError: damaged ``config.json`` or ``checkpoint.pt``.
        UnsafeFileError: a checkpoint that would need pickled code to load.
    """
    cfg_path = out_dir / CONFIG_FILE
    if not cfg_path.exists():
        raise RunError(f"Nothing to resume in {out_dir}: {CONFIG_FILE} is missing. Start a new run instead.")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg = TrainConfig(**raw["config"])
    except UnknownNameError:
        raise  # e.g. a strategy a plugin registered, not registered in this process
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptRunError(f"Cannot resume {out_dir}: corrupt {CONFIG_FILE} ({exc}). Start a new run.") from None
    for p in remove_stale_temps(out_dir) if clean else ():  # a run killed while saving leaves its half-written file
        log.info("Removed %s, left by the interrupted run.", p.name)
    resume = Resume(cfg, raw.get("resolved_strategy") or None, raw.get("auto"))
    ckpt = out_dir / CHECKPOINT_FILE
    if ckpt.exists():
        try:
            state = torch_load_tensors(ckpt, remedy="Delete it and start a new run, or restore the run directory from a backup.")
        except UnreadableFileError as exc:
            raise CorruptRunError(f"Cannot resume {out_dir}: corrupt {CHECKPOINT_FILE} ({exc}). Start a new run.") from None
        if not isinstance(state, dict):
            raise CorruptRunError(f"Cannot resume {out_dir}: {CHECKPOINT_FILE} is not a transferkit checkpoint. Start a new run.")
        if isinstance(state.get("model"), dict):  # weights saved from a DDP wrapper elsewhere load here too
            torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state["model"], "module.")
        resume.checkpoint = state
    return resume


def save_checkpoint(out_dir: Path, progress: Progress, *, model, optimizer, scheduler, strategy, ema=None) -> None:
    state = {**asdict(progress), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else {}, "strategy": strategy.state_dict(),
             "ema": ema.state_dict() if ema is not None else None}
    with atomic_path(out_dir / CHECKPOINT_FILE) as tmp:
        torch.save(state, str(tmp))


def mark_finished(out_dir: Path, epochs: int) -> None:
    """Replace the checkpoint by a marker: resuming a finished run only reopens it."""
    with atomic_path(out_dir / CHECKPOINT_FILE) as tmp:
        torch.save({"finished": True, "epoch": int(epochs)}, str(tmp))


def write_history(out_dir: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for row in history for k in row))  # rows of a resumed older run may lack columns
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(out_dir / HISTORY_FILE, buf.getvalue())
