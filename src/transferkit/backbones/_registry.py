"""The backbone registry: a table of :class:`BackboneSpec` that providers add to.

The registry imports no provider. :mod:`._catalog` (the public lookup and build path) imports
the provider modules on first use, and importing a provider adds its backbones here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._spec import WeightsInfo

if TYPE_CHECKING:
    from torch import nn


@dataclass
class BackboneSpec:
    """A registered backbone.

    Attributes:
        name: registry name (``resnet18``, ``efficientnet_lite0``, ``timm/<name>``).
        family: provider family (``torchvision``, ``timm``, ``bundled``, ``test``).
        build_fn: returns ``(module, stages, num_features)`` with random weights. ``module``
            maps a ``(batch, 3, H, W)`` tensor to ``(batch, num_features)``; ``stages`` is the
            ordered list of stage groups, each a list of module names inside ``module``.
        weights: the default pretrained weights and their preprocessing.
        load_default_weights: loads the default pretrained weights into ``module`` or
            raises :class:`WeightsUnavailableError`.
        is_available_offline: whether the default weights can be loaded without network.
        description: one line for the model listing.
        is_test: tiny backbones for tests, hidden from the default listing.
        bf16_safe: False where bf16 inference distorts this architecture's features beyond the
            fidelity bar; ``precision="auto"`` then runs it in fp32 without trying bf16 (a trial
            on the first batch can pass by chance and fail on later images).
    """

    name: str
    family: str
    build_fn: Callable[[], tuple[nn.Module, list[list[str]], int]]
    weights: WeightsInfo
    load_default_weights: Callable[[nn.Module], None]
    is_available_offline: Callable[[], bool]
    description: str = ""
    is_test: bool = False
    remap_state_dict: Callable[[dict], dict] | None = field(default=None, repr=False)
    bf16_safe: bool = True


_REGISTRY: dict[str, BackboneSpec] = {}


def add_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry (its name must be new); what provider modules call on import."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def registered() -> dict[str, BackboneSpec]:
    """The registry itself (name -> spec), in registration order."""
    return _REGISTRY


def group_stages(order: Sequence[str], boundaries: Sequence[str]) -> list[list[str]]:
    """Split an ordered list of module names into stages ending at each boundary.

    Modules after the last boundary (e.g. a final 1x1 conv and its norm) join the last
    stage; modules before the first boundary form a stem stage of their own.
    """
    stages: list[list[str]] = []
    current: list[str] = []
    bset = set(boundaries)
    for name in order:
        current.append(name)
        if name in bset:
            stages.append(current)
            current = []
    if current:
        if stages:
            stages[-1].extend(current)
        else:
            stages.append(current)
    return stages
