"""Weight EMA (``ema``): an exponential moving average of the weights, validated and saved instead of the last step's.

The average is over the model's floating-point parameters (frozen ones stay constant, so their
average is themselves); buffers such as BatchNorm statistics are the live model's. The decay is
warmed up as ``min(D, (1 + t) / (10 + t))`` after ``t`` updates (TensorFlow's ``num_updates``), so
the few hundred steps of a small fine-tuning run are not averaged with the starting weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn


class WeightEMA:
    """The running average of a model's weights, with decay ``decay``.

    Attributes:
        decay: the decay after warm-up.
        updates: steps averaged so far.
    """

    def __init__(self, decay: float):
        self.decay = float(decay)
        self.updates = 0
        self.shadow: dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg) -> WeightEMA | None:
        """The EMA of a run's config, or None when ``cfg.ema`` is 0 (off)."""
        return cls(cfg.ema) if cfg.ema else None

    def current_decay(self) -> float:
        """The decay the next update uses."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Average in the model's weights after an optimiser step (the first call starts the average from them)."""
        params = _floating(model)
        if not self.shadow:
            self.shadow = {name: p.detach().clone() for name, p in params.items()}
        else:
            names = list(self.shadow)
            torch._foreach_lerp_([self.shadow[n] for n in names], [params[n].detach() for n in names],
                                 1.0 - self.current_decay())
        self.updates += 1

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Run a block (validation, saving) with the averaged weights in ``model``; its own weights are put back after."""
        if not self.shadow:
            yield
            return
        params = _floating(model)
        with torch.no_grad():
            live = {name: params[name].detach().clone() for name in self.shadow}
            for name, value in self.shadow.items():
                params[name].copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in live.items():
                    params[name].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore a checkpoint's average onto ``model``'s devices."""
        params = _floating(model)
        self.updates = int(state["updates"])
        self.shadow = {k: v.to(params[k].device, params[k].dtype) for k, v in state["shadow"].items()}


def averaged(ema: WeightEMA | None, model: nn.Module):
    """``ema.applied(model)``, or a no-op context without an EMA."""
    return ema.applied(model) if ema is not None else nullcontext()


def _floating(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.is_floating_point()}
