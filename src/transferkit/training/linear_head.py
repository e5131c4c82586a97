"""A linear head fitted to convergence on frozen features: multinomial logistic regression by L-BFGS.

This is the baseline any user tries first (a logistic regression on the frozen features), so
transferkit fits its head the same way instead of a fixed few epochs of SGD: feature
extraction *is* this fit, and fine-tuning starts from it (linear probing, then fine-tuning).
Features are standardised with the training split's mean and std, and the scaling is folded
back into the weights, so the result is a plain ``nn.Linear`` on raw backbone features.
The L2 strength is chosen on the training split alone, by K-fold held-out log loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError

#: L2 strengths tried (mean cross-entropy + l2/2 |W|^2 on standardised features), strongest first.
L2_GRID = (1.0, 3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
#: Folds of the training split that choose the L2 strength.
L2_FOLDS = 3
#: L-BFGS iterations per fit.
MAX_ITER = 200


@dataclass
class HeadFit:
    """A fitted linear head and how it was chosen.

    Attributes:
        weight: ``(C, D)`` float32, for ``nn.Linear.weight`` on raw features.
        bias: ``(C,)`` float32.
        l2: the L2 strength used.
        l2_log_loss: held-out log loss (mean over the folds) for each strength tried.
        seconds: wall time.
    """

    weight: Any
    bias: Any
    l2: float
    l2_log_loss: dict[float, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """What ``metrics.json`` records: the solver, the chosen L2, the log loss of each strength tried."""
        return {"solver": "lbfgs", "l2": self.l2, "l2_log_loss": {f"{k:g}": round(v, 5) for k, v in self.l2_log_loss.items()},
                "seconds": round(self.seconds, 3)}


def fit_softmax(x, y, num_classes: int, l2: float, *, init=None, max_iter: int = MAX_ITER):
    """Fit a multinomial logistic regression ``softmax(x W + b)`` (mean cross-entropy + ``l2/2 |W|^2``).

    Full batch, L-BFGS with a strong Wolfe line search, in float32 (PyTorch, all cores).

    Args:
        x: ``(n, D)`` float32 tensor; y: ``(n,)`` int64 tensor of classes in ``[0, num_classes)``.
        init: ``(W, b)`` to start from (a warm start), else zeros.

    Returns:
        ``(W (D, C), b (C,))`` tensors.
    """
    import torch
    import torch.nn.functional as F

    d = x.shape[1]
    w = (init[0].clone() if init is not None else torch.zeros(d, num_classes)).requires_grad_(True)
    b = (init[1].clone() if init is not None else torch.zeros(num_classes)).requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(torch.addmm(b, x, w), y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def softmax_log_loss(x, y, wb) -> float:
    """Mean cross-entropy of ``softmax(x W + b)`` against ``y``."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        return float(F.cross_entropy(torch.addmm(wb[1], x, wb[0]), y))


def stratified_folds(labels: np.ndarray, num_folds: int, seed: int = 0) -> np.ndarray:
    """The fold of every row: each class's rows shuffled and dealt round-robin, so folds keep the class mix."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rng.shuffle(rows)
        folds[rows] = (np.arange(len(rows)) + rng.integers(num_folds)) % num_folds
    return folds


def choose_l2(x, y, num_classes: int, *, grid=L2_GRID, folds: int = L2_FOLDS, seed: int = 0,
              max_iter: int = MAX_ITER) -> tuple[float, dict[float, float]]:
    """The strength of ``grid`` with the lowest K-fold held-out log loss on ``(x, y)`` (standardised features).

    Each fold walks the grid strongest first, warm-starting from the previous fit (the path is smooth, so
    later fits take a few iterations). Classes with fewer images than folds are fine: their rows land in
    some folds only. With fewer than ``folds`` rows per class on average, the middle of the grid is used.
    """
    import torch

    labels = y.numpy()
    if len(labels) < 2 * folds or np.bincount(labels).max() < folds:
        mid = grid[len(grid) // 2]
        return mid, {}
    fold_of = stratified_folds(labels, folds, seed)
    losses = {value: 0.0 for value in grid}
    for k in range(folds):
        tr, ho = torch.from_numpy(np.flatnonzero(fold_of != k)), torch.from_numpy(np.flatnonzero(fold_of == k))
        wb = None
        for value in grid:
            wb = fit_softmax(x[tr], y[tr], num_classes, value, init=wb, max_iter=max_iter)
            losses[value] += softmax_log_loss(x[ho], y[ho], wb) * len(ho) / len(labels)
    best = min(grid, key=lambda v: losses[v])
    return best, losses


def fit_linear_head(features, labels, num_classes: int, *, l2: float | str = "auto", seed: int = 0,
                    max_iter: int = MAX_ITER) -> HeadFit:
    """Fit ``nn.Linear(D, C)`` weights to frozen ``features`` by L2-regularised logistic regression.

    Args:
        features: ``(N, D)`` float tensor (raw backbone features of the training split).
        labels: ``(N,)`` int64 tensor in ``[0, num_classes)``.
        num_classes: C.
        l2: L2 strength on standardised features, or ``"auto"``: chosen by :func:`choose_l2` on these rows.
        seed: fold assignment seed of the L2 choice.
        max_iter: L-BFGS iterations per fit.

    Returns:
        :class:`HeadFit` with ``weight (C, D)`` and ``bias (C,)`` for raw features.

    Raises:
        ConfigError: ``l2`` is neither ``"auto"`` nor a non-negative number.
    """
    if l2 != "auto" and (isinstance(l2, bool) or not isinstance(l2, int | float) or not l2 >= 0):
        raise ConfigError(f"`head_l2` must be a non-negative number or 'auto'; got {l2!r}.")
    t0 = time.perf_counter()
    x = features.detach().float().cpu()
    y = labels.detach().long().cpu()
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp_min(1e-6)  # a constant feature (dead ReLU) would divide by zero
    z = (x - mean) / std
    losses: dict[float, float] = {}
    if l2 == "auto":
        l2, losses = choose_l2(z, y, num_classes, seed=seed, max_iter=max_iter)
    w, b = fit_softmax(z, y, num_classes, float(l2), max_iter=max_iter)
    # softmax(((x - m) / s) W + b) = softmax(x (W / s) + (b - (m / s) W)): an nn.Linear on raw features.
    w_raw = w / std[:, None]
    b_raw = b - (mean / std) @ w
    return HeadFit(w_raw.T.contiguous(), b_raw.contiguous(), float(l2), losses, time.perf_counter() - t0)
