"""The classifier (backbone + new head) and its on-disk format in a run directory.

A trained model is two files: ``model.safetensors`` (the tensors; never pickle) and
``model.json`` (backbone name, weights source, preprocessing, class names, strategy,
...). Loading rebuilds the architecture with ``weights="none"`` and then loads the saved
tensors, so it never needs the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from .._io import atomic_path, read_json_object, write_json_atomic
from ..backbones import Preprocessing, create_backbone
from ..errors import CorruptRunError, RunError, TransferKitError

MODEL_FORMAT_VERSION = 1


class TransferModel(nn.Module):
    """A pretrained backbone with a new linear classification head.

    Attributes:
        backbone: a :class:`~transferkit.backbones.FeatureBackbone`.
        head: ``nn.Linear(backbone.num_features, num_classes)``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def preprocessing(self) -> Preprocessing:
        return self.backbone.preprocessing

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def save_model(model: TransferModel, run_dir: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Write ``model.safetensors`` then ``model.json`` atomically into ``run_dir``."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(run_dir / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    full = {
        "format_version": MODEL_FORMAT_VERSION,
        "transferkit_version": __version__,
        "backbone": model.backbone.name,
        "weights": model.backbone.weights_tag,
        "num_features": model.backbone.num_features,
        "num_classes": model.num_classes,
        "preprocessing": model.preprocessing.to_dict(),
        **meta,
    }
    write_json_atomic(run_dir / "model.json", full)


def read_model_meta(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``model.json`` of a run directory.

    Raises:
        RunError: no run there. CorruptRunError: unreadable, incomplete or incompatible metadata.
    """
    run_dir = Path(run_dir)
    meta_path = run_dir / "model.json"
    if not run_dir.exists():
        raise RunError(f"Run directory not found: {run_dir}. Train a model into it first.")
    if not meta_path.exists():
        raise RunError(f"{run_dir} is not a transferkit run: {meta_path.name} is missing. Point to the output folder of a training run.")
    meta = read_json_object(meta_path, error=CorruptRunError, what="run metadata",
                            remedy="Re-train, or restore the file from a backup.")
    version = meta.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise CorruptRunError(
            f"{meta_path} has model format version {version!r}; this transferkit ({__version__}) reads version "
            f"{MODEL_FORMAT_VERSION}. Re-train with this version or use the transferkit that wrote it."
        )
    required = ("backbone", "num_classes", "classes", "preprocessing")
    missing = [k for k in required if k not in meta]
    if missing:
        raise CorruptRunError(f"Corrupt run metadata {meta_path}: missing {', '.join(missing)}. Re-train the run.")
    if not isinstance(meta["classes"], list) or len(meta["classes"]) != meta["num_classes"]:
        raise CorruptRunError(f"Corrupt run metadata {meta_path}: 'classes' does not match 'num_classes'. Re-train the run.")
    try:
        Preprocessing.from_dict(meta["preprocessing"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptRunError(f"Corrupt run metadata {meta_path}: bad preprocessing ({exc}). Re-train the run.") from None
    return meta


def load_model(run_dir: str | os.PathLike) -> tuple[TransferModel, dict[str, Any]]:
    """Rebuild a trained :class:`TransferModel` from a run directory (no network needed).

    Returns:
        ``(model, meta)`` with the model in eval mode on the CPU.

    Raises:
        RunError: no run there.
        CorruptRunError: missing or damaged files, or tensors that do not fit the recorded backbone.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    meta = read_model_meta(run_dir)
    weights_path = run_dir / "model.safetensors"
    if not weights_path.exists():
        raise CorruptRunError(f"{weights_path} is missing; the run did not finish an epoch. Resume the run, or re-train it.")
    try:
        backbone = create_backbone(meta["backbone"], weights="none")
    except TransferKitError as exc:
        raise CorruptRunError(f"Run {run_dir} uses backbone {meta['backbone']!r}, which cannot be built here: {exc}") from None
    backbone.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
    backbone.weights_tag = meta.get("weights", "unknown")
    model = TransferModel(backbone, int(meta["num_classes"]))
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptRunError(f"Corrupt model file {weights_path}: {exc}. Re-train, or restore it from a backup.") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        first = (lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__)[:200]  # line 0 is a generic header
        raise CorruptRunError(f"{weights_path} does not match backbone {meta['backbone']!r} with {meta['num_classes']} classes ({first}).") from None
    model.eval()
    return model, meta
