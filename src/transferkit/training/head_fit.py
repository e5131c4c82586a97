"""``head_init="fit"``: the head fitted to convergence on the frozen features, as a run's epoch 0 or its only epoch."""

from __future__ import annotations

import time

import torch

from . import checkpoint as ckpt
from . import distributed
from .config import head_l2_value
from .evaluate import loss_and_accuracy
from .features import CachedFeatures
from .linear_head import fit_linear_head
from .model import save_model


def fit_head(trainer, feats: CachedFeatures, *, epoch: int) -> None:
    """Fit ``trainer``'s head on the frozen features, as the run's ``epoch`` (0: the model fine-tuning starts from;
    1: feature extraction's only one). Every process fits on all the features; rank 0's head is kept."""
    p, head, t0 = trainer.progress, trainer.model.head, time.perf_counter()
    fit = fit_linear_head(feats.train, feats.train_labels, trainer.model.num_classes, l2=head_l2_value(trainer.cfg.head_l2),
                          seed=trainer.cfg.seed)
    with torch.no_grad():
        head.weight.copy_(fit.weight)
        head.bias.copy_(fit.bias)
        distributed.sync_parameters(head, trainer.ctx)  # the same fit everywhere, up to the last bit only by luck
        train = loss_and_accuracy(head(feats.train), feats.train_labels)
        val = loss_and_accuracy(head(feats.val), feats.val_labels)
    p.head_fit = {**fit.to_dict(), "train_accuracy": train["accuracy"], "val_accuracy": val["accuracy"],
                  "val_loss": val["loss"]}
    p.best_acc, p.best_epoch = val["accuracy"], epoch
    if trainer.ctx.is_main:
        save_model(trainer.model, trainer.out, trainer._meta())
    trainer.reporter.message(f"Head fitted on the frozen features (logistic regression, L-BFGS, l2 {fit.l2:g}): train_acc "
                             f"{train['accuracy']:.4f}  val_acc {val['accuracy']:.4f}  {fit.seconds:.1f}s", **p.head_fit)
    if epoch:
        seconds = time.perf_counter() - t0
        p.epoch = epoch
        p.history.append({"epoch": epoch, "train_loss": train["loss"], "train_accuracy": train["accuracy"],
                          "val_loss": val["loss"], "val_accuracy": val["accuracy"], "lr_head": 0.0, "lr_backbone": 0.0,
                          "seconds": seconds, "train_seconds": fit.seconds, "val_seconds": seconds - fit.seconds,
                          "images_per_s": len(feats.train) / max(fit.seconds, 1e-9)})
        if trainer.ctx.is_main:
            ckpt.write_history(trainer.out, p.history)
        trainer.tracker.log_epoch(p.history[-1])
        p.train_seconds += seconds
        trainer._checkpoint(epoch)
