"""torchvision ImageNet backbones, fetched through torchvision's weights API and cache."""

from __future__ import annotations

import os

from ._registry import BackboneSpec, group_stages, register_backbone, weights_error
from ._spec import Preprocessing, WeightsInfo


def _cache_path(url: str) -> str:
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _preprocessing(weights) -> Preprocessing:
    t = weights.transforms()
    return Preprocessing(
        input_size=int(t.crop_size[0]),
        resize_size=int(t.resize_size[0]),
        interpolation=t.interpolation.value,
        mean=tuple(t.mean),
        std=tuple(t.std),
    )


def _loader(name: str, weights):
    def load(module) -> None:
        import torch

        from ._registry import load_backbone_state

        try:
            state = torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True)
        except Exception as exc:  # noqa: BLE001 - network/cache failures of every kind
            raise weights_error(name, f"torchvision {weights}", _cache_path(weights.url), exc) from None
        load_backbone_state(module, state, source=weights.url)

    return load


def _resnet_builder(fn_name: str, num_features: int):
    def build():
        import torchvision.models as tvm
        from torch import nn

        model = getattr(tvm, fn_name)(weights=None)
        model.fc = nn.Identity()
        stages = [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]
        return model, stages, num_features

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


def _register(name: str, weights_enum_name: str, builder, description: str) -> None:
    import torchvision.models as tvm

    weights = getattr(tvm, weights_enum_name).DEFAULT
    register_backbone(
        BackboneSpec(
            name=name,
            family="torchvision",
            build_fn=builder,
            weights=WeightsInfo(
                tag=str(weights).split(".")[-1],
                source=f"torchvision {str(weights)} (downloaded once to the torch hub cache)",
                location=_cache_path(weights.url),
                preprocessing=_preprocessing(weights),
            ),
            load_default_weights=_loader(name, weights),
            is_available_offline=lambda url=weights.url: os.path.exists(_cache_path(url)),
            description=description,
        )
    )


_register("resnet18", "ResNet18_Weights", _resnet_builder("resnet18", 512), "ResNet-18 (the specification's model)")
_register("resnet34", "ResNet34_Weights", _resnet_builder("resnet34", 512), "ResNet-34")
_register("resnet50", "ResNet50_Weights", _resnet_builder("resnet50", 2048), "ResNet-50")
_register("mobilenet_v3_large", "MobileNet_V3_Large_Weights", _mobilenet_v3_large_builder, "MobileNetV3-Large")
