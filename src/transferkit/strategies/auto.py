"""``auto``: choose a strategy from the dataset size and how well frozen features separate the classes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .base import strategy_class

#: The fine-tuning ladder ``auto`` climbs: least to most of the backbone trained.
LADDER = ("feature-extraction", "partial", "full")
#: Thresholds from the specification's guidance on dataset size.
SMALL_DATASET = 1_000
LARGE_DATASET = 10_000
#: Chance-corrected kNN accuracy below which the domain counts as far from ImageNet.
FAR_DOMAIN_SCORE = 0.7


@dataclass
class AutoDecision:
    """What ``auto`` chose and why.

    Attributes:
        strategy: the chosen strategy name.
        num_train: number of training images.
        probe_accuracy: leave-one-out kNN accuracy of the frozen features on a sample.
        chance: accuracy of always predicting the majority class of the sample.
        domain_score: ``(probe_accuracy - chance) / (1 - chance)``.
        is_far_domain: whether the domain counts as far from the pretraining data.
        probe_samples: images in the probe sample.
        reason: the one-line explanation shown to the user.
    """

    strategy: str
    num_train: int
    probe_accuracy: float
    chance: float
    domain_score: float
    is_far_domain: bool
    probe_samples: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_auto(num_train: int, probe_accuracy: float, chance: float, *, probe_samples: int = 0) -> AutoDecision:
    """Choose a strategy from dataset size and how well frozen features separate the classes.

    Size sets the starting point, as in the specification: under 1,000 training images ->
    feature extraction; 1,000-10,000 -> partial; over 10,000 -> full. When the frozen
    features separate the classes poorly (chance-corrected kNN accuracy below 0.7) the
    domain is far from the pretraining data and the choice moves one step toward more
    fine-tuning.
    """
    if num_train < SMALL_DATASET:
        base, size_text = 0, f"{num_train:,} training images (< {SMALL_DATASET:,})"
    elif num_train <= LARGE_DATASET:
        base, size_text = 1, f"{num_train:,} training images ({SMALL_DATASET:,}-{LARGE_DATASET:,})"
    else:
        base, size_text = 2, f"{num_train:,} training images (> {LARGE_DATASET:,})"
    score = (probe_accuracy - chance) / (1.0 - chance) if chance < 1.0 else 0.0
    far = score < FAR_DOMAIN_SCORE
    step = min(base + 1, len(LADDER) - 1) if far else base
    quality = "poorly" if far else "well"
    domain_text = (f"frozen features separate the classes {quality} (kNN {probe_accuracy:.2f}, chance {chance:.2f})"
                   + ("; domain looks far from ImageNet, one step more fine-tuning" if far and step != base else ""))
    chosen = strategy_class(LADDER[step])
    reason = f"{size_text}; {domain_text} -> {chosen.title or chosen.name}"
    return AutoDecision(chosen.name, num_train, float(probe_accuracy), float(chance), float(score), far, probe_samples, reason)


def knn_probe_accuracy(features, labels, *, k: int = 5) -> float:
    """Leave-one-out k-nearest-neighbour accuracy (cosine) of ``features`` (N, D)."""
    import numpy as np

    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    k = max(1, min(k, len(x) - 1))
    nn_idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    correct = 0
    for i in range(len(x)):
        votes = np.bincount(y[nn_idx[i]], weights=sims[i, nn_idx[i]] + 1.0, minlength=int(y.max()) + 1)
        correct += int(votes.argmax() == y[i])
    return correct / len(x)
