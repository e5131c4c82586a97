"""The training recipe's pieces: optimizer and schedule (with layer-wise LR decay), loss, batch mixing, one step.

Each piece reads its options from a :class:`~transferkit.training.config.TrainConfig`, so the
trainer and the LR finder build exactly the same optimisation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def param_groups(strategy, model, cfg) -> list[dict[str, Any]]:
    """The strategy's parameter groups, each named; with ``cfg.layer_decay`` the backbone group is split per stage.

    timm's layer decay: stage ``i`` of ``n`` (0 = nearest the input) trains at ``backbone_lr * D**(n - 1 - i)``,
    so the last stage gets ``backbone_lr`` and earlier, more generic features move less; backbone parameters
    outside every stage (a stem) get ``D**n``.
    """
    groups = strategy.param_groups(model, head_lr=cfg.head_lr, backbone_lr=cfg.backbone_lr)
    groups = [{"params": list(g["params"]), "lr": g["lr"], "name": g.get("name", f"group{i}")} for i, g in enumerate(groups)]
    decay = cfg.layer_decay
    if decay is None or decay == 1.0:
        return groups
    backbone = model.backbone
    n = len(backbone.stages)
    depth = {id(p): n - 1 - i for i in range(n) for mod in backbone.stage_modules(i) for p in mod.parameters()}
    out = []
    for g in groups:
        if g["name"] != "backbone":
            out.append(g)
            continue
        by_depth: dict[int, list] = {}
        for p in g["params"]:
            by_depth.setdefault(depth.get(id(p), n), []).append(p)
        for d in sorted(by_depth):
            name = f"backbone.stage{n - 1 - d}" if d < n else "backbone.stem"
            out.append({"params": by_depth[d], "lr": g["lr"] * decay ** d, "name": name})
    return out


def make_optimizer(strategy, model, cfg, epoch: int, previous: torch.optim.Optimizer | None = None):
    """An optimizer over :func:`param_groups`, and its cosine scheduler placed at ``epoch`` (1-based; None: no schedule).

    Rebuilt at an epoch boundary (``previous``), parameters that were training keep their optimizer state.
    """
    groups = param_groups(strategy, model, cfg)
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(groups, momentum=0.9, weight_decay=cfg.weight_decay)
    if previous is not None:
        kept = {p for g in opt.param_groups for p in g["params"]}
        opt.state.update({p: s for p, s in previous.state.items() if p in kept})
    if cfg.scheduler != "cosine":
        return opt, None
    for g in opt.param_groups:  # created at epoch e, the schedule starts at its step e - 1
        g["initial_lr"] = g["lr"]
        g["lr"] = g["lr"] * (1 + math.cos(math.pi * (epoch - 1) / cfg.epochs)) / 2
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs, last_epoch=epoch - 2)


def make_criterion(cfg) -> nn.Module:
    """Cross-entropy with ``cfg.label_smoothing`` (it takes class probabilities too, as mixup makes)."""
    return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)


class BatchMixer:
    """Mixup and/or CutMix on a training batch (torchvision's ``v2.MixUp``/``v2.CutMix``, one chosen per batch).

    Args:
        num_classes: classes of the labels.
        mixup, cutmix: the Beta(alpha, alpha) parameter of each; 0 turns one off.
    """

    def __init__(self, num_classes: int, *, mixup: float = 0.0, cutmix: float = 0.0):
        from torchvision.transforms import v2

        choices = ([v2.MixUp(alpha=mixup, num_classes=num_classes)] if mixup > 0 else []) + \
                  ([v2.CutMix(alpha=cutmix, num_classes=num_classes)] if cutmix > 0 else [])
        self._mix = choices[0] if len(choices) == 1 else v2.RandomChoice(choices)

    @classmethod
    def from_config(cls, cfg, num_classes: int) -> BatchMixer | None:
        return cls(num_classes, mixup=cfg.mixup, cutmix=cfg.cutmix) if cfg.mixup > 0 or cfg.cutmix > 0 else None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed batch and its soft labels (``(N, classes)`` probabilities)."""
        return self._mix(x, y)


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm layer of ``model`` in eval mode: normalise with the running statistics, do not update them."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def train_transform(preprocessing, cfg):
    """The training images' transform: random resized crop and flip (``cfg.augment``), plus ``cfg.auto_augment``
    (TrivialAugmentWide or RandAugment on the PIL image, before normalisation); centre crops without ``augment``."""
    if not cfg.augment:
        return preprocessing.eval_transform()
    base = preprocessing.train_transform()
    policy = cfg.auto_augment
    if policy == "none":
        return base
    from torchvision import transforms as T

    extra = T.TrivialAugmentWide() if policy == "trivialaugment" else T.RandAugment()
    steps = list(base.transforms)
    steps.insert(2, extra)  # after the crop and flip, on the PIL image
    return T.Compose(steps)


def train_step(model, opt, criterion, x, y, amp_dtype: torch.dtype | None, scaler=None, *, mixer: BatchMixer | None = None,
               ema=None):
    """One optimisation step under autocast (``amp_dtype`` None: fp32); returns ``(loss, logits)``.

    ``scaler`` is a ``GradScaler`` for fp16 (see :func:`~transferkit.inference.policy.training_autocast_dtype`);
    ``mixer`` mixes the batch first (the logits are then those of the mixed images); ``ema`` (a
    :class:`~transferkit.training.ema.WeightEMA`) averages the weights in after the step.
    """
    target = y
    if mixer is not None:
        x, target = mixer(x, y)
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = model(x)
    loss = criterion(logits.float(), target)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    if ema is not None:
        ema.update(getattr(model, "module", model))  # the weights themselves, outside a DDP wrapper (names unprefixed)
    return loss, logits
