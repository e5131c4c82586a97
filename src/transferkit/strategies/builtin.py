"""The three built-in strategies: feature extraction, partial and full fine-tuning."""

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


def _check_stages(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"`unfreeze_stages` of partial fine-tuning must be an int >= 1; got {value!r}.")
    return value
