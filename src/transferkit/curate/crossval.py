"""Out-of-fold class probabilities: K-fold cross-validated linear heads on frozen features.

Every image's probabilities come from a head that never saw its label, which is what lets a
wrong label stand out (a head that trained on it would have learnt it). The head is a
multinomial logistic regression on the L2-normalised features scaled by sqrt(D) (unit mean
square per dimension, so one L2 grid suits every dimension, and store vectors need no
statistics of their own), fitted full-batch with L-BFGS in float32 (PyTorch). Its L2 strength
is chosen on (a sample of) the first fold from a small grid by held-out log loss, strongest
first and warm-started, then used for every fold. The fitter and the fold dealing are
the training head's (:mod:`transferkit.training.linear_head`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, DataError
from ..events import Reporter
from ..training.linear_head import fit_softmax, stratified_folds

#: Folds of the cross-validation, unless told otherwise.
DEFAULT_FOLDS = 5
#: L2 strengths tried on the first fold (loss averaged over images), strongest first.
L2_GRID = (3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3)
#: L-BFGS iterations per fit: with 5% flips, 50 ranked as well as 100 (precision@N over 3 seeds on flowers12,
#: eurosat_rgb_small, neu_steel: mean 0.937 against 0.941, one flip apart) in half the time; 25 lost more on flowers12.
MAX_ITER = 50
#: The L2 strength is chosen on at most this many training rows of the first fold (and a quarter as many
#: held-out rows): the grid's fits then cost a fixed amount, and only the K fold fits grow with N.
L2_CHOICE_ROWS = 20_000
#: Below this rows x dims x classes, fits run on one torch thread (see :func:`_threads_for`).
SINGLE_THREAD_WORK = 100_000_000


@dataclass
class OutOfFold:
    """Out-of-fold probabilities and how they were made.

    Attributes:
        probabilities: ``(N, C)`` float32; row ``i`` from the head of the fold that held ``i`` out.
        folds: the fold (0..K-1) of every row.
        l2: the L2 strength used.
        l2_log_loss: held-out log loss of the first fold for each L2 strength tried.
        accuracy: how often the out-of-fold argmax equals the given label.
        seconds: wall time.
    """

    probabilities: np.ndarray
    folds: np.ndarray
    l2: float
    l2_log_loss: dict[float, float] = field(default_factory=dict)
    accuracy: float = 0.0
    seconds: float = 0.0


def check_folds(labels: np.ndarray, num_folds: int, class_names: Sequence[str] | None = None) -> None:
    """Refuse a cross-validation that cannot be stratified.

    Raises:
        ConfigError: ``num_folds`` is not an integer >= 2.
        DataError: fewer than two classes, or a class with fewer images than folds.
    """
    if isinstance(num_folds, bool) or not isinstance(num_folds, int | np.integer) or num_folds < 2:
        raise ConfigError(f"`folds` must be an integer >= 2; got {num_folds!r}.")
    counts = np.bincount(labels, minlength=len(class_names) if class_names is not None else 0)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(counts))]
    present = np.flatnonzero(counts)
    if len(present) < 2:
        only = f" (only {names[present[0]]!r})" if len(present) else ""
        raise DataError(f"Finding label issues needs at least two classes; got {len(present)}{only}. "
                        f"Label the images by class folder: DATA/<class>/*.jpg.")
    small = [i for i in present if counts[i] < num_folds]
    if small:
        listed = ", ".join(f"{names[i]!r} ({counts[i]})" for i in small[:5]) + (" ..." if len(small) > 5 else "")
        raise DataError(f"Class {listed} has fewer images than the {num_folds} cross-validation folds. "
                        f"Add images to it, remove it, or lower `folds` (at least 2).")


def prepare_features(features: np.ndarray):
    """Rows L2-normalised and scaled by sqrt(D), as a float32 tensor (store vectors are normalised already)."""
    import torch

    from ..store.search import normalize

    x = normalize(features)
    x *= np.float32(np.sqrt(x.shape[1]))  # in place: normalize made a new array
    return torch.from_numpy(x)


def _predict(x, wb):
    import torch

    with torch.no_grad():
        return torch.softmax(torch.addmm(wb[1], x, wb[0]), dim=1)


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, *, num_classes: int | None = None,
                              folds: int = DEFAULT_FOLDS, l2: float | str = "auto", seed: int = 0,
                              class_names: Sequence[str] | None = None, max_iter: int = MAX_ITER,
                              reporter: Reporter | None = None) -> OutOfFold:
    """K-fold cross-validated class probabilities of every row, each from a head that did not see the row.

    Args:
        features: ``(N, D)`` frozen features (or store vectors).
        labels: ``(N,)`` given classes, integers in ``[0, num_classes)``.
        num_classes: number of classes (default ``labels.max() + 1``).
        folds: number of folds K (stratified by class).
        l2: L2 strength of the heads, or ``"auto"``: the best of :data:`L2_GRID` by the first fold's
            held-out log loss (on at most :data:`L2_CHOICE_ROWS` of its training rows).
        seed: fold assignment seed.
        class_names: names for error messages.
        max_iter: L-BFGS iterations per fit.
        reporter: progress (a ``cross-validation`` task, one step per fit).

    Returns:
        :class:`OutOfFold`.

    Raises:
        ConfigError: bad ``folds`` or ``l2``; DataError: see :func:`check_folds`.
    """
    import torch

    t0 = time.perf_counter()
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = int(num_classes if num_classes is not None else labels.max() + 1)
    check_folds(labels, folds, class_names)
    grid = L2_GRID if l2 == "auto" else None
    if grid is None and (isinstance(l2, bool) or not isinstance(l2, int | float) or not l2 >= 0):
        raise ConfigError(f"`l2` must be a non-negative number or 'auto'; got {l2!r}.")
    reporter = reporter or Reporter(None)
    fold_of = stratified_folds(labels, folds, seed=seed)
    x = prepare_features(features)
    y = torch.from_numpy(labels)
    probs = np.zeros((len(labels), num_classes), dtype=np.float32)
    losses: dict[float, float] = {}
    with reporter.task("cross-validation", total=folds + (len(grid) if grid else 0), description="Cross-validating heads",
                       unit="fit") as task, _threads_for(len(labels) * x.shape[1] * num_classes):
        for k in range(folds):
            train, held = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
            p = None
            if k == 0 and grid is not None:
                l2, losses, p = _choose_l2(x, y, train, held, num_classes, grid, max_iter=max_iter, seed=seed, task=task)
            if p is None:
                p = _predict(x[held], fit_softmax(x[train], y[train], num_classes, float(l2), max_iter=max_iter))
            task.advance(1)
            probs[held] = p.numpy()
    accuracy = float(np.mean(probs.argmax(1) == labels))
    return OutOfFold(probs, fold_of, float(l2), losses, accuracy, time.perf_counter() - t0)


def _choose_l2(x, y, train: np.ndarray, held: np.ndarray, num_classes: int, grid, *, max_iter: int, seed: int, task):
    """``(l2, {l2: held-out log loss}, held-out probabilities or None)`` on the first fold, at most
    :data:`L2_CHOICE_ROWS` of its training rows (the probabilities only when it used all of them)."""
    import torch

    rng = np.random.default_rng(seed + 1)
    sub_train = np.sort(rng.choice(train, L2_CHOICE_ROWS, replace=False)) if len(train) > L2_CHOICE_ROWS else train
    sub_held = np.sort(rng.choice(held, L2_CHOICE_ROWS // 4, replace=False)) if len(held) > L2_CHOICE_ROWS // 4 else held
    xt, yt, xh, yh = x[sub_train], y[sub_train], x[sub_held], y[sub_held]
    best, wb, losses = None, None, {}
    for value in grid:  # strongest first: each fit starts from the previous, smoother solution
        wb = fit_softmax(xt, yt, num_classes, value, init=wb, max_iter=max_iter)
        p = _predict(xh, wb)
        losses[value] = float(-torch.log(p[torch.arange(len(yh)), yh].clamp_min(1e-12)).mean())
        if best is None or losses[value] < best[0]:
            best = (losses[value], value, p)
        task.advance(1)
    whole = len(sub_train) == len(train) and len(sub_held) == len(held)
    return best[1], losses, best[2] if whole else None


@contextmanager
def _threads_for(work: int):
    """One torch thread while a fit's products are small (``work`` = rows x dims x classes): there, the
    threads' start-up and spinning cost more than they save, 5x on a loaded 2-core machine (see BENCHMARKS.md)."""
    import torch

    before = torch.get_num_threads()
    if work < SINGLE_THREAD_WORK:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
