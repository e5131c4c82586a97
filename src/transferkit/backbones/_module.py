"""The backbone module every registered backbone is wrapped in."""

from __future__ import annotations

from torch import nn

from ._spec import Preprocessing


class FeatureBackbone(nn.Module):
    """A pretrained trunk that maps images to ``(batch, num_features)`` embeddings.

    Attributes:
        model: the wrapped torchvision/timm module (classifier removed).
        stages: ordered stage groups (lists of module names inside ``model``), from the
            input to the output. Partial fine-tuning unfreezes the last ones.
        num_features: embedding dimension.
        name: registry name.
        weights_tag: which weights were loaded (``"IMAGENET1K_V1"``, ``"none"``, ``"file:x.pth"``).
        preprocessing: the :class:`Preprocessing` the weights expect.
    """

    def __init__(self, model: nn.Module, *, stages, num_features: int, name: str,
                 weights_tag: str, preprocessing: Preprocessing):
        super().__init__()
        self.model = model
        self.stages = [list(s) for s in stages]
        self.num_features = int(num_features)
        self.name = name
        self.weights_tag = weights_tag
        self.preprocessing = preprocessing

    def forward(self, x):
        return self.model(x)

    def stage_modules(self, index: int) -> list[nn.Module]:
        """Modules of stage ``index`` (negative indices count from the output)."""
        return [self.model.get_submodule(n) for n in self.stages[index]]

    def stage_parameter_names(self, index: int) -> list[str]:
        """Parameter names (relative to this module) of one stage."""
        names = []
        for mod_name in self.stages[index]:
            for p_name, _ in self.model.get_submodule(mod_name).named_parameters():
                names.append(f"model.{mod_name}.{p_name}")
        return names
