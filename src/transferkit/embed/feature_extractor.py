"""The spec's extractor: any classifier minus its last layer, as a function from images to embeddings."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..backbones import Preprocessing
from ..config import Settings
from ..data.decode import UnreadableImageError, load_image
from ..errors import ConfigError, DataError
from ..inference.torch_backend import forward


def trunk_of(model: nn.Module) -> tuple[nn.Module, Preprocessing | None]:
    """The feature part of ``model`` and its preprocessing, if it carries one."""
    from ..backbones._module import FeatureBackbone
    from ..training.model import TransferModel

    if isinstance(model, TransferModel):
        return model.backbone, model.backbone.preprocessing
    if isinstance(model, FeatureBackbone):
        return model, model.preprocessing
    # A plain classifier (e.g. torchvision resnet18): drop the last layer, as in the spec.
    children = list(model.children())
    if len(children) < 2:
        raise ConfigError(f"Cannot make a feature extractor from {type(model).__name__}: it has no classifier layer to remove. "
                          f"Pass a torchvision classifier, a TransferModel or a backbone from create_backbone().")
    return nn.Sequential(*children[:-1]), None


class FeatureExtractor:
    """Embeddings from a model with its classifier removed (the spec's API).

    Args:
        model: a :class:`~transferkit.model.TransferModel` (its backbone is used), a
            :class:`FeatureBackbone`, or a plain classifier such as ``torchvision.models.resnet18()``
            (all children but the last, then flattened).
    """

    def __init__(self, model: nn.Module):
        self.features, pre = trunk_of(model)
        self.features.eval()
        self.preprocessing = pre or Preprocessing()

    def extract(self, image: torch.Tensor) -> np.ndarray:
        """Embed a ``(B, 3, H, W)`` (or ``(3, H, W)``) tensor; returns float32 ``(B, D)``, not normalised."""
        if image.ndim == 3:
            image = image.unsqueeze(0)
        if image.ndim != 4:
            raise ConfigError(f"`image` must be a (B, 3, H, W) tensor; got shape {tuple(image.shape)}.")
        return forward(self.features, image, channels_last=False).cpu().numpy()

    def extract_paths(self, paths: Sequence[str | os.PathLike], *, batch_size: int = 64,
                      settings: Settings | None = None) -> np.ndarray:
        """Embed image files with the model's preprocessing; raises on an unreadable file.

        Returns:
            float32 ``(N, D)``, not normalised.

        Raises:
            DataError: a file cannot be read.
        """
        from ..config import resolve_settings

        limit = resolve_settings(settings).max_pixels
        transform = self.preprocessing.eval_transform()
        out = []
        for start in range(0, len(paths), batch_size):
            batch = []
            for p in paths[start:start + batch_size]:
                try:
                    batch.append(transform(load_image(p, max_pixels=limit, draft_size=self.preprocessing.resize_size)))
                except UnreadableImageError as exc:
                    raise DataError(f"Cannot read image {p}: {exc}. Remove or replace the file.") from None
            out.append(self.extract(torch.stack(batch)))
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
