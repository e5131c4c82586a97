"""A transfer strategy: hooks the trainer calls, state it saves, and the registry of strategies.

In the spirit of Lightning's ``BaseFinetuning``, a strategy is a small object that says which
parameters train before training starts (:meth:`Strategy.on_train_start`), may change them at
an epoch boundary (:meth:`Strategy.on_epoch_start`, e.g. gradual unfreezing), groups them for
the optimizer (:meth:`Strategy.param_groups`), keeps frozen BatchNorm layers in eval mode
(:meth:`Strategy.set_train_mode`) and saves its schedule in the checkpoint
(:meth:`Strategy.state_dict`), so a resumed run continues where it stopped.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..errors import CorruptRunError, unknown_name


class Strategy:
    """Base class. Subclasses set ``name`` (and ``title``) and implement :meth:`trainable_backbone_stages`.

    Attributes:
        name: the registry name (``partial``).
        title: how messages name it (``partial fine-tuning``).
    """

    name: ClassVar[str] = "base"
    title: ClassVar[str] = ""

    @classmethod
    def from_options(cls, **options: Any) -> Strategy:
        """Build from training options (``unfreeze_stages``, ...); a strategy reads only those it knows."""
        return cls()

    def trainable_backbone_stages(self, num_stages: int) -> list[int]:
        """Indices of the backbone stages that train now."""
        raise NotImplementedError

    @property
    def is_backbone_frozen(self) -> bool:
        """Whether the backbone stays frozen for the whole run (its features can then be computed once)."""
        return False

    # -- hooks ----------------------------------------------------------------------------------
    def on_train_start(self, model) -> None:
        """Set ``requires_grad`` on every parameter of ``model`` (a TransferModel) for the current schedule."""
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        for i in self.trainable_backbone_stages(len(model.backbone.stages)):
            for mod in model.backbone.stage_modules(i):
                for p in mod.parameters():
                    p.requires_grad_(True)
        for p in model.head.parameters():
            p.requires_grad_(True)

    def on_epoch_start(self, model, epoch: int, optimizer) -> bool:
        """Called before epoch ``epoch`` (1-based); may change which parameters train.

        Returns:
            True when the optimizer's parameter groups must be rebuilt from :meth:`param_groups`.
        """
        return False

    def param_groups(self, model, *, head_lr: float, backbone_lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups: the head at ``head_lr``, trainable backbone at ``backbone_lr``."""
        groups = [{"name": "head", "params": list(model.head.parameters()), "lr": head_lr}]
        backbone = [p for p in model.backbone.parameters() if p.requires_grad]
        if backbone:
            groups.append({"name": "backbone", "params": backbone, "lr": backbone_lr})
        return groups

    def set_train_mode(self, model) -> None:
        """``model.train()``, except frozen backbone parts stay in eval mode (BatchNorm statistics, dropout)."""
        model.train()
        model.backbone.eval()
        for i in self.trainable_backbone_stages(len(model.backbone.stages)):
            for mod in model.backbone.stage_modules(i):
                mod.train()

    # -- state ----------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """``name`` and the options that shape the strategy (recorded in ``model.json`` and ``metrics.json``)."""
        return {"name": self.name}

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue the same schedule (saved in ``checkpoint.pt``)."""
        return self.describe()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output.

        Raises:
            CorruptRunError: the state is another strategy's.
        """
        if state.get("name", self.name) != self.name:
            raise CorruptRunError(f"The checkpoint holds the state of strategy {state.get('name')!r}, not {self.name!r}. "
                                  "Re-train the run.")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({args})"


# -- registry -----------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Strategy]] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return str(name).replace("_", "-").lower()


def register_strategy(cls: type[Strategy] | None = None, *, aliases: tuple[str, ...] = ()):
    """Register a :class:`Strategy` subclass under its ``name`` (usable as a class decorator).

    Raises:
        ValueError: the name or an alias is taken.
    """

    def add(c: type[Strategy]) -> type[Strategy]:
        names = [_key(c.name), *(_key(a) for a in aliases)]
        taken = [n for n in names if n in _REGISTRY or n in _ALIASES or n == "auto"]
        if taken:
            raise ValueError(f"Strategy name {taken[0]!r} is already registered.")
        _REGISTRY[names[0]] = c
        _ALIASES.update({a: names[0] for a in names[1:]})
        return c

    return add(cls) if cls is not None else add


def unregister_strategy(name: str) -> None:
    """Remove a registered strategy and its aliases (plugins, tests)."""
    key = _ALIASES.get(_key(name), _key(name))
    _REGISTRY.pop(key, None)
    for alias in [a for a, k in _ALIASES.items() if k == key]:
        del _ALIASES[alias]


def list_strategies() -> list[str]:
    """Registered strategy names, in registration order (``auto`` is not one: it chooses among them)."""
    return list(_REGISTRY)


def strategy_class(name: str) -> type[Strategy]:
    """The class registered under ``name`` or one of its aliases.

    Raises:
        UnknownNameError: unknown name, with close matches.
    """
    key = _ALIASES.get(_key(name), _key(name))
    if key not in _REGISTRY:
        raise unknown_name("strategy", name, (*_REGISTRY, "auto"))
    return _REGISTRY[key]


def get_strategy(name: str, **options: Any) -> Strategy:
    """Build a registered strategy by name from training options (``unfreeze_stages``, ...).

    Raises:
        UnknownNameError: unknown name (``auto`` is resolved by :func:`~transferkit.strategies.auto.choose_auto` first).
        ConfigError: an option the strategy rejects.
    """
    return strategy_class(name).from_options(**options)
