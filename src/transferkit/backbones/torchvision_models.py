"""torchvision ImageNet backbones: their weights are downloaded once into torch hub's cache.

The registry records each model's default weights (URL, tag, preprocessing) as plain data,
so looking a backbone up never imports torchvision (~1.8 s of imports, most of it
``torch._dynamo`` pulled in by ``torchvision.ops``). The ResNets are built by
:mod:`._native` (torchvision's layout and names, no torchvision import); torchvision builds
MobileNetV3. ``tests/unit/test_backbones.py`` checks the table against torchvision's weight enums.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ._registry import BackboneSpec, add_backbone, group_stages
from ._spec import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, WeightsInfo
from ._weights import load_backbone_state, weights_error


class TorchvisionWeights(NamedTuple):
    """A torchvision weights enum member, as data (``str(enum)``, its URL and its transforms)."""

    enum: str
    url: str
    preprocessing: Preprocessing

    @property
    def tag(self) -> str:
        return self.enum.split(".")[-1]


def _imagenet(resize_size: int) -> Preprocessing:
    return Preprocessing(input_size=224, resize_size=resize_size, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD)


#: Default weights of the registered torchvision backbones (``<Model>_Weights.DEFAULT``).
DEFAULT_WEIGHTS: dict[str, TorchvisionWeights] = {
    "resnet18": TorchvisionWeights("ResNet18_Weights.IMAGENET1K_V1", "https://download.pytorch.org/models/resnet18-f37072fd.pth",
                                   _imagenet(256)),
    "resnet34": TorchvisionWeights("ResNet34_Weights.IMAGENET1K_V1", "https://download.pytorch.org/models/resnet34-b627a593.pth",
                                   _imagenet(256)),
    "resnet50": TorchvisionWeights("ResNet50_Weights.IMAGENET1K_V2", "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
                                   _imagenet(232)),
    "mobilenet_v3_large": TorchvisionWeights("MobileNet_V3_Large_Weights.IMAGENET1K_V2",
                                             "https://download.pytorch.org/models/mobilenet_v3_large-5c1a4163.pth", _imagenet(232)),
}


def _cache_path(url: str) -> str:
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _loader(name: str, weights: TorchvisionWeights):
    def load(module) -> None:
        import torch


        try:
            state = torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True)
        except Exception as exc:  # noqa: BLE001 - network/cache failures of every kind
            raise weights_error(name, f"torchvision {weights.enum}", _cache_path(weights.url), exc) from None
        load_backbone_state(module, state, source=weights.url)

    return load


def _resnet_builder(fn_name: str):
    def build():
        from ._native import resnet

        # torchvision's layout and parameter names without importing torchvision (see _native)
        model = resnet(fn_name)
        stages = [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]
        return model, stages, model.num_features

    return build


def _mobilenet_v3_large_builder():
    import torchvision.models as tvm
    from torch import nn

    model = tvm.mobilenet_v3_large(weights=None)
    model.classifier = nn.Identity()
    order = [f"features.{i}" for i in range(len(model.features))]
    # Stage ends where the next block downsamples; the final 1x1 conv joins the last stage.
    boundaries = ["features.0", "features.1", "features.3", "features.6", "features.12", "features.15"]
    return model, group_stages(order, boundaries), 960


def _register(name: str, builder, description: str) -> None:
    weights = DEFAULT_WEIGHTS[name]
    add_backbone(
        BackboneSpec(
            name=name,
            family="torchvision",
            build_fn=builder,
            weights=WeightsInfo(
                tag=weights.tag,
                source=f"torchvision {weights.enum} (downloaded once to the torch hub cache)",
                location=_cache_path(weights.url),
                preprocessing=weights.preprocessing,
            ),
            load_default_weights=_loader(name, weights),
            is_available_offline=lambda url=weights.url: os.path.exists(_cache_path(url)),
            description=description,
        )
    )


_register("resnet18", _resnet_builder("resnet18"), "ResNet-18 (the specification's model)")
_register("resnet34", _resnet_builder("resnet34"), "ResNet-34")
_register("resnet50", _resnet_builder("resnet50"), "ResNet-50")
_register("mobilenet_v3_large", _mobilenet_v3_large_builder, "MobileNetV3-Large")
