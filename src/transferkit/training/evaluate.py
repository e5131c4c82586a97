"""Evaluation of a classifier: logits over an image set, classification metrics, a run's splits."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..data.folders import DatasetSplits, ImageSet, discover
from ..data.loading import make_loader
from ..errors import DataError
from ..events import Reporter
from ..inference.policy import reduced_dtype
from ..inference.torch_backend import forward


def eval_autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision of evaluation and prediction: AMP on CUDA (bf16 where supported, else fp16), none elsewhere."""
    if device.type != "cuda":
        return None
    return reduced_dtype("cuda", "auto", gpu_bf16=torch.cuda.is_bf16_supported())


def predict_logits(model, images: ImageSet, *, batch_size: int, device: torch.device, num_workers: int | None = None,
                   reporter: Reporter | None = None, on_skip: Callable[[dict[int, str]], None] | None = None,
                   settings=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (on the CPU) and labels of every readable image of ``images``, with the model's eval transforms.

    ``on_skip`` receives ``{index: reason}`` for the images that cannot be decoded.
    """
    model.eval()
    pre = model.preprocessing
    loader = make_loader(images, pre.eval_transform(), batch_size=batch_size, device=device, num_workers=num_workers,
                         draft_size=pre.resize_size, settings=settings)
    dtype = eval_autocast_dtype(device)
    outs, labels = [], []
    reporter = reporter or Reporter()
    with reporter.task("evaluate", total=len(images), description="evaluating") as task:
        for x, y, _idx, bad in loader:
            if bad and on_skip is not None:
                on_skip(dict(bad))
            if x is not None:
                outs.append(forward(model, x, device=device, autocast_dtype=dtype).cpu())
                labels.append(y)
            task.advance((0 if x is None else len(x)) + len(bad))
    if not outs:
        return torch.empty(0, model.num_classes), torch.empty(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(labels)


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean cross-entropy and accuracy (``nan`` and 0 for no images)."""
    if len(labels) == 0:
        return {"loss": float("nan"), "accuracy": 0.0}
    return {"loss": float(nn.functional.cross_entropy(logits, labels)),
            "accuracy": float((logits.argmax(1) == labels).float().mean())}


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Accuracy, loss, per-class precision/recall/F1 and the confusion matrix.

    Raises:
        DataError: no images.
    """
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


def splits_for_run(data, meta: dict, *, settings=None) -> DatasetSplits:
    """Discover ``data`` with the split settings the run was trained with."""
    cfg = meta.get("config", {})
    return discover(data, val_fraction=float(cfg.get("val_fraction", 0.2)), seed=int(cfg.get("seed", 0)), settings=settings)
