"""Confident learning: which given labels out-of-fold probabilities contradict, and how surely.

Written from the method's description (Northcutt, Jiang and Chuang, "Confident Learning:
Estimating Uncertainty in Dataset Labels", JAIR 2021); no code of the AGPL library was used.

1. The threshold of class ``j`` is the mean probability of ``j`` over the images labelled ``j``
   (its average self-confidence), so a class the model finds hard gets a lower bar.
2. An image counts for the class ``j`` whose probability is highest among those at or above
   their threshold; the *confident joint* ``C[given, j]`` counts images by (given label, that class).
3. Calibrated to the given class counts, the joint's off-diagonal mass of row ``i`` estimates
   how many images labelled ``i`` belong to another class.
4. That many images of each given class, those with the lowest self-confidence, are the
   *confident* issues ("prune by class"), except any whose given label is still the most probable.
5. The ranking is every image whose given label is not the most probable, lowest label quality
   (self-confidence) first; the confident issues are marked in it.

Why step 5 ranks more than step 4 selects: with 5% of every class flipped (benchmarks/
eval_label_issues.py, efficientnet_lite0), the prune-by-class count undercounts small classes,
so on flowers12 (80 images a class) it selected 38-46 of 48 flips and precision@N of the pruned
list fell to 0.73; the full ranking kept 0.96-1.0 there and equalled it elsewhere (eurosat
0.81-0.89, neu_steel 0.87-0.99). Self-confidence ranked as well or better than the normalised
margin on every set (eurosat 0.81-0.89 against 0.76-0.81).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

#: Label-quality scores: ``self_confidence`` = ``p_given``, ``normalized_margin`` =
#: ``(p_given - max_other p + 1) / 2``. Lower means more likely mislabelled.
RANK_BY = ("self_confidence", "normalized_margin")
DEFAULT_RANK_BY = "self_confidence"


@dataclass
class ConfidentResult:
    """What confident learning found.

    Attributes:
        ranked: rows whose given label is not the most probable, most likely wrong first.
        flagged: the confident issues (step 4), a subset of ``ranked``, in its order.
        quality: ``(N,)`` label-quality score of every row (lower: more likely wrong).
        suggested: ``(N,)`` the most probable class other than the given one.
        thresholds: ``(C,)`` per-class thresholds.
        joint: ``(C, C)`` the confident joint (counts, given label x likely true label).
        noise_matrix: ``(C, C)`` the calibrated joint, rows normalised: estimated
            ``P(true = j | given = i)``.
        estimated_num_issues: the calibrated joint's off-diagonal mass times N (the count
            step 4 selects before dropping rows whose given label is the most probable).
    """

    ranked: np.ndarray
    flagged: np.ndarray
    quality: np.ndarray
    suggested: np.ndarray
    thresholds: np.ndarray
    joint: np.ndarray
    noise_matrix: np.ndarray
    estimated_num_issues: float


def class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per class, the mean predicted probability of that class over the rows labelled with it (1.0 for an absent class)."""
    num_classes = probs.shape[1]
    sums = np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)


def confident_classes(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per row, the most probable class among those at or above their threshold, or -1 when there is none."""
    above = probs >= thresholds[None, :]
    masked = np.where(above, probs, -1.0)
    best = masked.argmax(1)
    return np.where(above.any(1), best, -1)


def confident_joint(labels: np.ndarray, assigned: np.ndarray, num_classes: int) -> np.ndarray:
    """``C[given, assigned]`` counts over the rows that have a confident class."""
    ok = assigned >= 0
    joint = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(joint, (labels[ok], assigned[ok]), 1)
    return joint


def calibrate_joint(joint: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The joint rescaled so each given class's row sums to its number of rows, then to a distribution summing to 1."""
    counts = np.bincount(labels, minlength=joint.shape[0]).astype(np.float64)
    rows = joint.sum(1, keepdims=True).astype(np.float64)
    scaled = np.where(rows > 0, joint / np.maximum(rows, 1) * counts[:, None], 0.0)
    # a class with no confident row keeps its mass on the diagonal: no evidence of noise
    empty = rows[:, 0] == 0
    scaled[empty, empty] = counts[empty]
    total = scaled.sum()
    return scaled / total if total > 0 else scaled


def check_rank_by(rank_by: str) -> str:
    """``rank_by`` if it names a label-quality score.

    Raises:
        ConfigError: it does not.
    """
    if rank_by not in RANK_BY:
        raise ConfigError(f"`rank_by` must be one of {', '.join(RANK_BY)}; got {rank_by!r}.")
    return rank_by


def label_quality(probs: np.ndarray, labels: np.ndarray, rank_by: str = DEFAULT_RANK_BY) -> np.ndarray:
    """Per row, how well the probabilities support the given label, in [0, 1] (see :data:`RANK_BY`).

    Raises:
        ConfigError: unknown ``rank_by``.
    """
    check_rank_by(rank_by)
    rows = np.arange(len(labels))
    given = probs[rows, labels]
    if rank_by == "self_confidence":
        return given.astype(np.float64)
    other = probs.copy()
    other[rows, labels] = -np.inf
    return ((given - other.max(1) + 1.0) / 2.0).astype(np.float64)


def prune_by_class(quality: np.ndarray, labels: np.ndarray, calibrated: np.ndarray) -> np.ndarray:
    """Per given class ``i``, its ``round(N * off-diagonal mass of row i)`` rows of lowest ``quality`` (all but one at most)."""
    n = len(labels)
    selected = np.zeros(n, dtype=bool)
    for i in range(calibrated.shape[0]):
        rows = np.flatnonzero(labels == i)
        m = min(int(round((calibrated[i].sum() - calibrated[i, i]) * n)), len(rows) - 1)
        if m > 0:
            order = np.lexsort((rows, quality[rows]))  # lowest quality first, ties by row
            selected[rows[order[:m]]] = True
    return selected


def find_label_errors(probs: np.ndarray, labels: np.ndarray, *, rank_by: str = DEFAULT_RANK_BY) -> ConfidentResult:
    """Confident learning on out-of-fold probabilities (see the module docstring).

    Args:
        probs: ``(N, C)`` out-of-fold predicted probabilities (rows sum to 1).
        labels: ``(N,)`` given classes in ``[0, C)``.
        rank_by: label-quality score that orders the flagged rows (see :data:`RANK_BY`).

    Returns:
        :class:`ConfidentResult`.

    Raises:
        ConfigError: shapes that do not match, or an unknown ``rank_by``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ConfigError(f"`probs` must be (N, C) with one label per row; got {probs.shape} and {labels.shape}.")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ConfigError(f"`labels` must lie in [0, {probs.shape[1]}); got {labels.min()}..{labels.max()}.")
    num_classes = probs.shape[1]
    quality = label_quality(probs, labels, rank_by)
    thresholds = class_thresholds(probs, labels)
    assigned = confident_classes(probs, thresholds)
    joint = confident_joint(labels, assigned, num_classes)
    calibrated = calibrate_joint(joint, labels)
    rows = np.arange(len(labels))
    other = probs.copy()
    other[rows, labels] = -np.inf
    suggested = other.argmax(1)
    # a row whose given label is still the most probable is a hard example, not a contradicted label
    contradicted = other.max(1) > probs[rows, labels]
    ranked = np.flatnonzero(contradicted)
    ranked = ranked[np.lexsort((ranked, quality[ranked]))]  # lowest quality first, ties by row
    flagged = ranked[prune_by_class(quality, labels, calibrated)[ranked]]
    row_sums = calibrated.sum(1, keepdims=True)
    noise = np.where(row_sums > 0, calibrated / np.maximum(row_sums, 1e-300), 0.0)
    estimated = float((calibrated.sum() - np.trace(calibrated)) * len(labels))
    return ConfidentResult(ranked, flagged, quality, suggested, thresholds, joint, noise, estimated)
