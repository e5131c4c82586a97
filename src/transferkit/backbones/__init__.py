"""Backbone registry: pretrained trunks whose weights carry their own preprocessing."""

from ._registry import (
    BackboneSpec,
    backbone_bf16_safe,
    create_backbone,
    get_backbone_spec,
    list_backbones,
    load_state_dict_file,
    register_backbone,
)
from ._spec import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, WeightsInfo

__all__ = [
    "BackboneSpec", "IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing", "WeightsInfo", "backbone_bf16_safe", "create_backbone",
    "get_backbone_spec", "list_backbones", "load_state_dict_file", "register_backbone",
]
