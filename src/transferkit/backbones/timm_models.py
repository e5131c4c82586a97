"""Any timm model as ``timm/<name>``; weights come from timm's hub cache."""

from __future__ import annotations

import os

from ._registry import BackboneSpec, group_stages
from ._spec import Preprocessing, WeightsInfo
from ._weights import weights_error


def _preprocessing(cfg: dict) -> Preprocessing:
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    crop_pct = float(cfg.get("crop_pct", 0.875) or 0.875)
    interp = cfg.get("interpolation", "bilinear")
    if interp not in ("bilinear", "bicubic", "nearest"):
        interp = "bicubic"
    return Preprocessing(
        input_size=size, resize_size=max(size, int(round(size / crop_pct))), interpolation=interp,
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))), std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
    )


def _hf_cache_location(hub_id: str | None) -> tuple[str, bool]:
    if not hub_id:
        return "(no hub id)", False
    try:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return "(huggingface_hub not installed)", False
    repo = hub_id.split("@")[0]
    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, fname)
        if isinstance(hit, str) and os.path.exists(hit):
            return hit, True
    return os.path.join(HF_HUB_CACHE, "models--" + repo.replace("/", "--")), False


def timm_spec(model_name: str) -> BackboneSpec:
    """Build a spec for ``timm/<model_name>``."""
    import timm

    if not timm.is_model(model_name):
        raise _unknown_timm(model_name)
    cfg = timm.models.get_pretrained_cfg(model_name)
    cfg_dict = cfg.to_dict() if cfg is not None else {}
    location, cached = _hf_cache_location(cfg_dict.get("hf_hub_id"))
    name = f"timm/{model_name}"

    def build():
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
        order = [n for n, _ in model.named_children()]
        info = getattr(model, "feature_info", None)
        boundaries = []
        if info:
            for entry in info:
                mod = entry["module"] if isinstance(entry, dict) else entry
                top = mod.split(".")[0]
                if top not in order:
                    continue
                # expand the container holding the stages so each becomes its own group
                if "." in mod:
                    container = model.get_submodule(top)
                    children = [f"{top}.{c}" for c, _ in container.named_children()]
                    idx = order.index(top)
                    order[idx : idx + 1] = children
                    boundaries.extend(children)
                    break
                boundaries.append(top)
        return model, group_stages(order, boundaries or order), model.num_features

    def load(module) -> None:
        try:
            pretrained = timm.create_model(model_name, pretrained=True, num_classes=0)
        except Exception as exc:  # noqa: BLE001 - hub/network failures of every kind
            raise weights_error(name, f"timm {cfg_dict.get('hf_hub_id', model_name)}", location, exc) from None
        module.load_state_dict(pretrained.state_dict())

    return BackboneSpec(
        name=name, family="timm", build_fn=build,
        weights=WeightsInfo(tag=str(cfg_dict.get("tag") or "pretrained"), source=f"timm hub {cfg_dict.get('hf_hub_id', '?')}",
                            location=location, preprocessing=_preprocessing(cfg_dict)),
        load_default_weights=load, is_available_offline=lambda: cached, description=f"timm {model_name}",
    )


def _unknown_timm(model_name: str):
    import difflib

    import timm

    from ..errors import UnknownNameError

    close = difflib.get_close_matches(model_name, timm.list_models(), n=3, cutoff=0.6)
    hint = (" Did you mean " + " or ".join(f"'timm/{c}'" for c in close) + "?") if close else ""
    return UnknownNameError(f"Unknown timm model {model_name!r}.{hint} See timm.list_models() for the names.")
