"""Looking backbones up and building them: the one build path every backbone goes through.

This module fills the registry: it imports the provider modules on first use (not at
import, so ``transferkit --help`` never imports torch), and each provider adds its backbones
to :mod:`._registry` as it is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import unknown_name
from . import _registry
from ._registry import BackboneSpec
from ._weights import load_backbone_state, load_state_dict_file, matches


def _ensure_providers() -> None:
    from . import efficientnet_lite, tiny, torchvision_models  # noqa: F401 - importing registers their backbones


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry.

    Raises:
        ValueError: a backbone of that name is already registered (built-in ones included).
    """
    _ensure_providers()
    return _registry.add_backbone(spec)


def list_backbones(*, include_test: bool = False) -> list[str]:
    """Names of the registered backbones (``timm/<name>`` is open-ended and not listed)."""
    _ensure_providers()
    return [n for n, s in _registry.registered().items() if include_test or not s.is_test]


def get_backbone_spec(name: str) -> BackboneSpec:
    """Look up ``name``; ``timm/<model>`` builds a spec on the fly.

    Raises:
        UnknownNameError: the name is not registered (the message lists close matches).
    """
    _ensure_providers()
    specs = _registry.registered()
    if name in specs:
        return specs[name]
    if name.startswith("timm/"):
        from . import timm_models

        return timm_models.timm_spec(name[len("timm/") :])
    raise unknown_name(
        "model", name, list_backbones(), hint="Any timm model is available as 'timm/<name>'."
    )


def backbone_bf16_safe(name: str) -> bool:
    """Whether ``precision="auto"`` may try bf16 for backbone ``name`` (names not registered here,
    ``timm/<name>`` included: True, and the fidelity check decides)."""
    _ensure_providers()
    spec = _registry.registered().get(name)
    return True if spec is None else spec.bf16_safe


def create_backbone(name: str = "resnet18", *, weights: str | os.PathLike | None = "default"):
    """Build a backbone with its weights.

    Args:
        name: registry name, e.g. ``"resnet18"``, ``"efficientnet_lite0"`` or ``"timm/convnext_tiny"``.
        weights: ``"default"`` for the pretrained weights, ``"none"`` for an explicit random
            initialisation, or a path to a local state_dict (``.safetensors``, ``.pth``, ``.pt``).

    Returns:
        A :class:`FeatureBackbone` (an ``nn.Module``) mapping images to ``(batch, num_features)``.

    Raises:
        UnknownNameError: unknown backbone.
        WeightsUnavailableError: the pretrained weights cannot be obtained.
        DataNotFoundError / UnsafeFileError / ConfigError: bad ``weights`` file.
    """
    spec = get_backbone_spec(name)
    module, stages, num_features = spec.build_fn()
    if weights is None or str(weights) == "none":
        tag = "none"
    elif str(weights) == "default":
        spec.load_default_weights(module)
        tag = spec.weights.tag
    else:
        path = Path(weights)
        state = load_state_dict_file(path)
        if spec.remap_state_dict is not None and not matches(module, state):
            state = spec.remap_state_dict(state)
        load_backbone_state(module, state, source=str(path))
        tag = f"file:{path.name}"
    from ._module import FeatureBackbone

    return FeatureBackbone(
        module, stages=stages, num_features=num_features, name=spec.name,
        weights_tag=tag, preprocessing=spec.weights.preprocessing,
    )
