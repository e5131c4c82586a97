"""The backbone registry and the one build path every backbone goes through."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, WeightsUnavailableError, unknown_name
from ._spec import WeightsInfo

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Keys of a classifier layer that are dropped when a full-model state_dict is loaded.
_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "_fc.", "head.fc.")


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
        description: one line for ``transferkit models``.
        is_test: tiny backbones for tests, hidden from the default listing.
        bf16_safe: False where bf16 inference was measured to distort this architecture's
            features beyond the fidelity bar; ``precision="auto"`` then runs it in fp32 without
            trying bf16 (a trial on the first batch can pass by chance and fail on later images).
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


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry (name must be new)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones(*, include_test: bool = False) -> list[str]:
    """Names of the registered backbones (``timm/<name>`` is open-ended and not listed)."""
    _ensure_providers()
    return [n for n, s in _REGISTRY.items() if include_test or not s.is_test]


def get_backbone_spec(name: str) -> BackboneSpec:
    """Look up ``name``; ``timm/<model>`` builds a spec on the fly.

    Raises:
        UnknownNameError: the name is not registered (the message lists close matches).
    """
    _ensure_providers()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith("timm/"):
        from . import timm_models

        return timm_models.timm_spec(name[len("timm/") :])
    raise unknown_name(
        "model", name, list_backbones(), hint="Any timm model is available as 'timm/<name>'."
    )


def _ensure_providers() -> None:
    # Importing the provider modules registers their backbones (lazily, so that
    # ``transferkit --help`` never imports torch).
    from . import efficientnet_lite, tiny, torchvision_models  # noqa: F401


def backbone_bf16_safe(name: str) -> bool:
    """Whether ``precision="auto"`` may try bf16 for backbone ``name`` (names not registered here,
    ``timm/<name>`` included: True, and the fidelity check decides)."""
    _ensure_providers()
    spec = _REGISTRY.get(name)
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
        if spec.remap_state_dict is not None and not _matches(module, state):
            state = spec.remap_state_dict(state)
        load_backbone_state(module, state, source=str(path))
        tag = f"file:{path.name}"
    from ._module import FeatureBackbone

    return FeatureBackbone(
        module, stages=stages, num_features=num_features, name=spec.name,
        weights_tag=tag, preprocessing=spec.weights.preprocessing,
    )


def _matches(module, state: dict) -> bool:
    own = set(module.state_dict())
    keys = {_strip_prefix(k) for k in state}
    return len(own & keys) > 0


def _strip_prefix(key: str) -> str:
    for prefix in ("backbone.model.", "module."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict without ever executing pickled code.

    ``.safetensors`` files are read with safetensors; ``.pth``/``.pt``/``.bin`` with
    ``torch.load(weights_only=True)``, which refuses arbitrary objects.
    """
    from ..errors import DataNotFoundError

    if not path.exists():
        raise DataNotFoundError(f"Weights file not found: {path}. Pass an existing .safetensors/.pth file, 'default' or 'none'.")
    if path.is_dir():
        raise ConfigError(f"--weights expects a file, got the folder {path}.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ConfigError(f"Cannot read weights file {path}: not a valid safetensors file ({exc}).") from None
    from .._io import UnreadableFileError, torch_load_tensors

    try:
        obj = torch_load_tensors(
            path, remedy="Only plain tensors are accepted; re-save it with torch.save(model.state_dict()) or as .safetensors.")
    except UnreadableFileError as exc:
        raise ConfigError(f"Cannot read weights file {path}: {exc}.") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise ConfigError(f"Weights file {path} does not hold a state_dict (a mapping of names to tensors).")
    return obj


def load_backbone_state(module, state: dict, *, source: str) -> None:
    """Load ``state`` into ``module``, ignoring classifier keys; all backbone keys must match."""
    cleaned = {}
    for key, value in state.items():
        key = _strip_prefix(key)
        if key.startswith(_CLASSIFIER_PREFIXES) and key not in module.state_dict():
            continue
        cleaned[key] = value
    own = module.state_dict()
    missing = [k for k in own if k not in cleaned]
    unexpected = [k for k in cleaned if k not in own]
    mismatched = [k for k in own if k in cleaned and tuple(cleaned[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} with the wrong shape (e.g. {k}: {tuple(cleaned[k].shape)} vs {tuple(own[k].shape)})")
        raise ConfigError(
            f"Weights in {source} do not fit this backbone: keys {', '.join(parts)}. "
            "Check that the file was saved from the same architecture as --model."
        )
    module.load_state_dict(cleaned, strict=True)


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


def weights_error(name: str, what: str, where: str, exc: BaseException | None = None) -> WeightsUnavailableError:
    """The one message for unobtainable weights: which, where looked, and the remedies."""
    reason = f" ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})" if exc and str(exc) else ""
    return WeightsUnavailableError(
        f"Cannot load pretrained weights {what} for '{name}': not in the cache at {where} and the download failed{reason}. "
        f"Remedies: pass a local file with --weights FILE (.safetensors/.pth), "
        f"use --model efficientnet_lite0 (bundled, works offline), or --weights none for random initialisation."
    )
