"""What a bug report needs to know about this machine: the CPU's features, what ``auto`` chooses and why,
the cache, the versions and the optional extras installed."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

#: Packages whose versions a report lists (distribution names).
PACKAGES = ("torch", "torchvision", "openvino", "lancedb", "faiss-cpu", "timm", "onnx", "simplejpeg", "numpy", "pillow",
            "scikit-learn", "openTSNE")
#: Images of the "large folder" and "small folder" questions.
LARGE_FOLDER, SMALL_FOLDER = None, 100


def system_report(settings=None, *, cpu=None) -> dict[str, Any]:
    """The machine as transferkit sees it, as plain JSON-able values.

    Args:
        settings: :class:`~transferkit.config.Settings` (``None``: the environment's); its ``cache_dir`` is reported.
        cpu: the :class:`~transferkit.inference.cpu.CpuFeatures` to decide for (default: this machine's).

    Returns:
        ``{"transferkit", "python", "platform", "cpu", "cuda", "device", "inference", "training", "cache",
        "packages", "extras"}``; see ``transferkit doctor``.
    """
    import torch

    from . import __version__
    from .config import resolve_settings
    from .inference.cache import ConversionCache
    from .inference.cpu import CpuFeatures
    from .inference.devices import resolve_device
    from .inference.openvino_backend import cpu_runs_bf16, openvino_available

    settings = resolve_settings(settings)
    cpu = CpuFeatures.from_system() if cpu is None else cpu
    device = resolve_device("auto")
    has_ov = openvino_available()
    cache = ConversionCache(settings.cache_dir)
    cuda = torch.cuda.is_available()
    return {
        "transferkit": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": {"model": cpu.model_name or platform.processor() or "unknown", "cores": os.cpu_count(),
                "avx2": cpu.avx2, "avx512f": cpu.avx512f, "avx512_bf16": cpu.avx512_bf16, "amx_bf16": cpu.amx_bf16,
                "native_bf16": cpu.has_native_bf16, "openvino_bf16": cpu_runs_bf16() if has_ov else None},
        "cuda": {"available": cuda, "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                 if cuda else []},
        "device": device.type,
        "inference": inference_choices(device.type, cpu, openvino_available=has_ov),
        "training": training_choices(device, cpu),
        "cache": {"path": str(cache.root), "exists": cache.root.is_dir(), "size_bytes": cache.size_bytes()},
        "packages": {name: _version(name) for name in PACKAGES},
        "extras": extras(),
    }


def inference_choices(device_type: str, cpu, *, openvino_available: bool) -> dict[str, dict[str, Any]]:
    """What ``backend="auto", precision="auto"`` chooses when embedding a large and a small folder, and for a
    model known to fail in bf16 (EfficientNet-Lite0), with the policy's reasons."""
    from .inference.policy import decide

    cases = {"large folder": (LARGE_FOLDER, True), "small folder": (SMALL_FOLDER, True),
             "large folder, bf16-unsafe model": (LARGE_FOLDER, False)}
    out = {}
    for label, (n, safe) in cases.items():
        d = decide("auto", "auto", device_type=device_type, cpu=cpu, openvino_available=openvino_available,
                   bf16_safe=safe, expected_items=n, cached_conversion=False)
        reduced = "AMP (bf16 or fp16)" if device_type == "cuda" else "bf16"
        precision = f"{reduced} if it passes the fidelity check, else fp32" if d.try_reduced else "fp32"
        out[label] = {"items": n, "backend": d.backend, "precision": precision, "reason": d.reason}
    return out


def training_choices(device, cpu) -> dict[str, dict[str, Any]]:
    """The fine-tuning autocast ``precision="auto"`` chooses, for a model and for one that trains depthwise convolutions."""
    import torch

    from .inference.policy import training_autocast_choice

    depthwise = torch.nn.Conv2d(8, 8, 3, groups=8)
    out = {}
    for label, model in (("fine-tuning", None), ("full fine-tuning, depthwise convolutions", depthwise)):
        dtype, why = training_autocast_choice(device, "auto", model, cpu=cpu)
        out[label] = {"autocast": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32"), "reason": why}
    return out


def extras() -> dict[str, dict[str, Any]]:
    """transferkit's optional extras (``pip install transferkit[NAME]``): their packages and whether installed."""
    try:
        requires = metadata.requires("transferkit") or []
    except metadata.PackageNotFoundError:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for req in requires:
        spec, _, marker = req.partition(";")
        if "extra" not in marker:
            continue
        extra = marker.split("==", 1)[1].strip().strip("'\"")
        name = spec.strip().split("[")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        entry = found.setdefault(extra, {"packages": {}, "installed": True})
        entry["packages"][name] = _version(name)
        entry["installed"] = entry["installed"] and entry["packages"][name] is not None
    return found


def _version(name: str) -> str | None:
    if name == "python":
        return sys.version.split()[0]
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
