"""Loading weights into a backbone: state_dict files (never executing pickled code) and key checks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, DataNotFoundError, WeightsUnavailableError

if TYPE_CHECKING:
    import torch

#: Keys of a classifier layer that are dropped when a full-model state_dict is loaded.
_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "_fc.", "head.fc.")


def matches(module, state: dict) -> bool:
    """Whether ``state`` shares any (prefix-stripped) key with ``module``'s own state_dict."""
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

    Raises:
        DataNotFoundError: ``path`` does not exist.
        ConfigError: ``path`` is a folder, unreadable, or holds no state_dict.
        UnsafeFileError: the file holds pickled Python objects.
    """
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"Weights file not found: {path}. Pass an existing .safetensors/.pth file, 'default' or 'none'.")
    if path.is_dir():
        raise ConfigError(f"`weights` must be a file; got the folder {path}.")
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
    """Load ``state`` into ``module``, ignoring classifier keys; all backbone keys must match.

    Raises:
        ConfigError: keys are missing, unexpected or of the wrong shape.
    """
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
            "Check that the file was saved from the same architecture as `model`."
        )
    module.load_state_dict(cleaned, strict=True)


def weights_error(name: str, what: str, where: str, exc: BaseException | None = None) -> WeightsUnavailableError:
    """The one message for unobtainable weights: which, where looked, and the remedies."""
    reason = f" ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})" if exc and str(exc) else ""
    return WeightsUnavailableError(
        f"Cannot load pretrained weights {what} for '{name}': not in the cache at {where} and the download failed{reason}. "
        "Remedies: pass a local weights file (.safetensors/.pth) as `weights`, "
        "choose the `model` efficientnet_lite0 (bundled, works offline), or set `weights` to 'none' for random initialisation."
    )
