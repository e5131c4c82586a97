"""The built-in strategies: feature extraction, partial and full fine-tuning, gradual unfreezing."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Strategy, register_strategy


@register_strategy(aliases=("fe", "linear"))
class FeatureExtraction(Strategy):
    """Freeze the whole backbone; train only a new head (the specification's first strategy)."""

    name = "feature-extraction"
    title = "feature extraction"

    def trainable_backbone_stages(self, num_stages: int) -> list[int]:
        return []

    @property
    def is_backbone_frozen(self) -> bool:
        return True


@register_strategy
class PartialFineTuning(Strategy):
    """Unfreeze the last ``unfreeze_stages`` stages of the backbone and the head.

    The stages come from the backbone's ordered stage list (ResNet: ``layer4``;
    EfficientNet: the last block group with ``conv_head``), never from name patterns.
    """

    name = "partial"
    title = "partial fine-tuning"

    def __init__(self, unfreeze_stages: int = 1):
        self.unfreeze_stages = _check_stages(unfreeze_stages)

    @classmethod
    def from_options(cls, *, unfreeze_stages: int = 1, **_: Any) -> PartialFineTuning:
        return cls(unfreeze_stages=unfreeze_stages)

    def trainable_backbone_stages(self, num_stages: int) -> list[int]:
        if self.unfreeze_stages > num_stages:
            raise ConfigError(
                f"`unfreeze_stages` {self.unfreeze_stages} exceeds the backbone's {num_stages} stages. "
                f"Use at most {num_stages}, or the `full` strategy."
            )
        return list(range(num_stages - self.unfreeze_stages, num_stages))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "unfreeze_stages": self.unfreeze_stages}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.unfreeze_stages = _check_stages(state.get("unfreeze_stages", self.unfreeze_stages))


@register_strategy
class FullFineTuning(Strategy):
    """Train every layer; the backbone at the low learning rate, the head at the head rate."""

    name = "full"
    title = "full fine-tuning"

    def on_train_start(self, model) -> None:
        for p in model.parameters():
            p.requires_grad_(True)

    def trainable_backbone_stages(self, num_stages: int) -> list[int]:
        return list(range(num_stages))

    def set_train_mode(self, model) -> None:
        model.train()


@register_strategy(aliases=("gradual-unfreezing", "fine-tune"))
class GradualUnfreezing(Strategy):
    """fastai's ``fine_tune``: the head alone for ``frozen_epochs``, then one more backbone stage per epoch, from the top.

    The schedule is a function of the epoch, which is the strategy's state: a run resumed mid-schedule
    restores it from the checkpoint and continues with the same stages trainable. Newly unfrozen
    stages join the optimizer at the epoch boundary (``on_epoch_start`` returns True), the parameters
    already training keeping their optimizer state.
    """

    name = "gradual"
    title = "gradual unfreezing"

    def __init__(self, frozen_epochs: int = 1):
        if not isinstance(frozen_epochs, int) or isinstance(frozen_epochs, bool) or frozen_epochs < 0:
            raise ConfigError(f"`frozen_epochs` of gradual unfreezing must be an int >= 0; got {frozen_epochs!r}.")
        self.frozen_epochs = frozen_epochs
        self.epoch = 0  # the epoch being trained (0: before the first)

    @classmethod
    def from_options(cls, *, frozen_epochs: int = 1, **_: Any) -> GradualUnfreezing:
        return cls(frozen_epochs=frozen_epochs)

    def unfrozen_count(self, epoch: int, num_stages: int) -> int:
        """Backbone stages that train during ``epoch``."""
        return max(0, min(num_stages, epoch - self.frozen_epochs))

    def trainable_backbone_stages(self, num_stages: int) -> list[int]:
        return list(range(num_stages - self.unfrozen_count(self.epoch, num_stages), num_stages))

    def on_epoch_start(self, model, epoch: int, optimizer) -> bool:
        n = len(model.backbone.stages)
        changed = self.unfrozen_count(epoch, n) != self.unfrozen_count(self.epoch, n)
        self.epoch = epoch
        if changed:
            self.on_train_start(model)
        return changed

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "frozen_epochs": self.frozen_epochs}

    def state_dict(self) -> dict[str, Any]:
        return {**self.describe(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.frozen_epochs = int(state.get("frozen_epochs", self.frozen_epochs))
        self.epoch = int(state.get("epoch", 0))


def _check_stages(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"`unfreeze_stages` of partial fine-tuning must be an int >= 1; got {value!r}.")
    return value
