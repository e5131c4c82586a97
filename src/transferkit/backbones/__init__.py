"""Backbone registry: pretrained trunks whose weights carry their own preprocessing."""

from ._catalog import backbone_bf16_safe, create_backbone, get_backbone_spec, list_backbones, register_backbone
from ._registry import BackboneSpec
from ._spec import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, WeightsInfo
from ._weights import load_state_dict_file

__all__ = [
    "BackboneSpec", "IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing", "WeightsInfo", "backbone_bf16_safe", "create_backbone",
    "get_backbone_spec", "list_backbones", "load_state_dict_file", "register_backbone",
]
