"""The report's figures: the confusion matrix and the training curves (matplotlib, no pyplot state)."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_path


def plot_confusion_matrix(cm, classes: Sequence[str], path: str | os.PathLike, *, title: str = "Confusion matrix") -> Path:
    """Draw a confusion matrix (rows = true class, columns = predicted) with counts in the cells.

    Colours are row-normalised (recall per class) so small classes stay readable; the
    numbers are raw counts. Returns ``path``.

    Raises:
        ValueError: ``cm`` is not square or does not match ``classes``.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(cm)
    k = len(classes)
    if cm.ndim != 2 or cm.shape != (k, k):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not match {k} classes")
    rows = cm.sum(axis=1, keepdims=True).astype(float)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    side = float(min(max(4.5, 0.45 * k + 2.5), 20.0))
    fig = Figure(figsize=(side + 1.0, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels([str(c) for c in classes], rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center", fontsize=8 if k > 15 else 10)
    ax.set_yticklabels([str(c) for c in classes], fontsize=8 if k > 15 else 10)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)
    if k <= 40:  # beyond that the numbers are unreadable anyway
        fontsize = 10 if k <= 10 else 7 if k <= 20 else 5
        for i in range(k):
            for j in range(k):
                value = cm[i, j]
                text = f"{int(value)}" if float(value).is_integer() else f"{value:.2g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_history(history: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Draw training curves: train/val loss and validation accuracy per epoch. Returns ``path``.

    Rows need ``epoch``; ``train_loss``, ``val_loss`` and ``val_accuracy`` are drawn where
    present (missing or ``None`` values leave a gap).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        _history_figure(history).savefig(tmp, format="png")
    return path


def history_png(history: Sequence[Mapping[str, Any]]) -> bytes:
    buf = io.BytesIO()
    _history_figure(history).savefig(buf, format="png")
    return buf.getvalue()


def _history_figure(history: Sequence[Mapping[str, Any]]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = list(history)
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(rows)]

    def series(key):
        values = [as_float(r.get(key)) for r in rows]
        return values if any(v is not None and math.isfinite(v) for v in values) else None

    fig = Figure(figsize=(10, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss = fig.add_subplot(1, 2, 1)
    ax_acc = fig.add_subplot(1, 2, 2)
    for key, name, style in (("train_loss", "train", "o-"), ("val_loss", "validation", "s--")):
        values = series(key)
        if values is not None:
            ax_loss.plot(epochs, [math.nan if v is None else v for v in values], style, label=name, markersize=4)
    ax_loss.set_title("Loss")
    ax_loss.set_xlabel("epoch")
    if ax_loss.lines:
        ax_loss.legend()
    acc = series("val_accuracy")
    if acc is not None:
        ax_acc.plot(epochs, [math.nan if v is None else v for v in acc], "o-", color="tab:green", markersize=4, label="validation")
        best = max(range(len(acc)), key=lambda i: -1 if acc[i] is None else acc[i])
        ax_acc.annotate(f"best {acc[best]:.3f}", (epochs[best], acc[best]), textcoords="offset points", xytext=(0, -14), ha="center", fontsize=9)
    ax_acc.set_title("Validation accuracy")
    ax_acc.set_xlabel("epoch")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
    fig.tight_layout()
    return fig


def as_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
