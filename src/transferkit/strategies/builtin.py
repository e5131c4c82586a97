"""Transfer strategies as small objects: which parameters train, at which learning rate.

Each strategy answers three questions, in the spirit of Lightning's ``BaseFinetuning``:
which parameters are trainable (:meth:`Strategy.apply`), what the optimizer's parameter
groups are (:meth:`Strategy.param_groups`), and which modules must stay in eval mode while
training (:meth:`Strategy.set_train_mode` — frozen BatchNorm layers keep their running
statistics). ``auto`` picks one of them from the dataset size and a measured domain signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, unknown_name

STRATEGY_NAMES = ("feature-extraction", "partial", "full")


class Strategy:
    """Base class. Subclasses set ``name`` and implement :meth:`trainable_backbone_stages`."""

    name = "base"

    def trainable_backbone_stages(self, num_stages: int) -> list[int]:
        raise NotImplementedError

    @property
    def is_backbone_frozen(self) -> bool:
        return False

    def apply(self, model) -> None:
        """Set ``requires_grad`` on every parameter of ``model`` (a TransferModel)."""
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        for i in self.trainable_backbone_stages(len(model.backbone.stages)):
            for mod in model.backbone.stage_modules(i):
                for p in mod.parameters():
                    p.requires_grad_(True)
        for p in model.head.parameters():
            p.requires_grad_(True)

    def param_groups(self, model, *, head_lr: float, backbone_lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups: the head at ``head_lr``, trainable backbone at ``backbone_lr``."""
        groups = [{"name": "head", "params": list(model.head.parameters()), "lr": head_lr}]
        backbone = [p for p in model.backbone.parameters() if p.requires_grad]
        if backbone:
            groups.append({"name": "backbone", "params": backbone, "lr": backbone_lr})
        return groups

    def set_train_mode(self, model) -> None:
        """``model.train()``, except frozen backbone parts stay in eval mode (BatchNorm, dropout)."""
        model.train()
        model.backbone.eval()
        for i in self.trainable_backbone_stages(len(model.backbone.stages)):
            for mod in model.backbone.stage_modules(i):
                mod.train()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def state_dict(self) -> dict[str, Any]:
        return self.describe()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({args})"


class FeatureExtraction(Strategy):
    """Freeze the whole backbone; train only a new head (the specification's first strategy)."""

    name = "feature-extraction"

    def trainable_backbone_stages(self, num_stages: int) -> list[int]:
        return []

    @property
    def is_backbone_frozen(self) -> bool:
        return True


@dataclass(repr=False)
class PartialFineTuning(Strategy):
    """Unfreeze the last ``unfreeze_stages`` stages of the backbone and the head.

    The stages come from the backbone's ordered stage list (ResNet: ``layer4``;
    EfficientNet: the last block group with ``conv_head``), never from name patterns.
    """

    unfreeze_stages: int = 1
    name: str = field(default="partial", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.unfreeze_stages, int) or self.unfreeze_stages < 1:
            raise ConfigError(f"`unfreeze_stages` of partial fine-tuning must be an int >= 1; got {self.unfreeze_stages!r}.")

    def trainable_backbone_stages(self, num_stages: int) -> list[int]:
        if self.unfreeze_stages > num_stages:
            raise ConfigError(
                f"--unfreeze-stages {self.unfreeze_stages} exceeds the backbone's {num_stages} stages. "
                f"Use at most {num_stages}, or --strategy full."
            )
        return list(range(num_stages - self.unfreeze_stages, num_stages))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "unfreeze_stages": self.unfreeze_stages}


class FullFineTuning(Strategy):
    """Train every layer; the backbone at the low learning rate, the head at the head rate."""

    name = "full"

    def apply(self, model) -> None:
        for p in model.parameters():
            p.requires_grad_(True)

    def trainable_backbone_stages(self, num_stages: int) -> list[int]:
        return list(range(num_stages))

    def set_train_mode(self, model) -> None:
        model.train()


def get_strategy(name: str, *, unfreeze_stages: int = 1) -> Strategy:
    """Build a strategy by name (``feature-extraction``, ``partial``, ``full``).

    Raises:
        UnknownNameError: unknown name (``auto`` is resolved by :func:`choose_auto` first).
    """
    key = name.replace("_", "-").lower()
    aliases = {"feature-extraction": "feature-extraction", "fe": "feature-extraction", "linear": "feature-extraction",
               "partial": "partial", "full": "full"}
    if key not in aliases:
        raise unknown_name("strategy", name, (*STRATEGY_NAMES, "auto"))
    key = aliases[key]
    if key == "feature-extraction":
        return FeatureExtraction()
    if key == "partial":
        return PartialFineTuning(unfreeze_stages=unfreeze_stages)
    return FullFineTuning()


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
        reason: the one-line explanation printed to the user.
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
        return dict(self.__dict__)


def choose_auto(num_train: int, probe_accuracy: float, chance: float, *, probe_samples: int = 0) -> AutoDecision:
    """Choose a strategy from dataset size and how well frozen features separate the classes.

    Size sets the starting point, as in the specification: under 1,000 training images ->
    feature extraction; 1,000-10,000 -> partial; over 10,000 -> full. When the frozen
    features separate the classes poorly (chance-corrected kNN accuracy below 0.7) the
    domain is far from the pretraining data and the choice moves one step toward more
    fine-tuning.
    """
    order = list(STRATEGY_NAMES)
    if num_train < SMALL_DATASET:
        base, size_text = 0, f"{num_train:,} training images (< {SMALL_DATASET:,})"
    elif num_train <= LARGE_DATASET:
        base, size_text = 1, f"{num_train:,} training images ({SMALL_DATASET:,}-{LARGE_DATASET:,})"
    else:
        base, size_text = 2, f"{num_train:,} training images (> {LARGE_DATASET:,})"
    score = (probe_accuracy - chance) / (1.0 - chance) if chance < 1.0 else 0.0
    far = score < FAR_DOMAIN_SCORE
    step = min(base + 1, 2) if far else base
    quality = "poorly" if far else "well"
    domain_text = (f"frozen features separate the classes {quality} (kNN {probe_accuracy:.2f}, chance {chance:.2f})"
                   + ("; domain looks far from ImageNet, one step more fine-tuning" if far and step != base else ""))
    reason = f"{size_text}; {domain_text} -> {_pretty(order[step])}"
    return AutoDecision(order[step], num_train, float(probe_accuracy), float(chance), float(score), far, probe_samples, reason)


def _pretty(name: str) -> str:
    return {"feature-extraction": "feature extraction", "partial": "partial fine-tuning", "full": "full fine-tuning"}[name]


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
