"""Fast inference for frozen feature extractors, guarded by a fidelity check.

On the CPU, a frozen backbone's forward pass is where embedding and feature-extraction
training spend their time. :class:`InferenceRunner` picks the fastest backend that keeps
the features faithful to the fp32 eager model:

- ``openvino`` (CPU): the module is converted once (cached on disk) and compiled by
  OpenVINO, whose CPU kernels are several times faster than eager PyTorch here, especially
  for depthwise convolutions (EfficientNet, MobileNet). It can run in bf16 on CPUs with
  AMX/AVX512-BF16.
- ``torch``: eager PyTorch in channels-last memory format; autocast on CUDA.

``precision="auto"`` tries bf16 first and keeps it only if, on the first batch, every
output has cosine similarity >= ``min_cosine`` (0.999) to the fp32 eager reference;
otherwise it uses fp32. The decision and the measured fidelity are in :attr:`info`.
Measured on a 2-core Sapphire Rapids VM: ResNet-18 (random-init weights) in bf16 keeps cos >= 0.9998
on 3,157 photos, so bf16 is
used; EfficientNet-Lite0 in bf16 drops to cos 0.998 on some photos, so it runs in fp32.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError

log = logging.getLogger("transferkit")

BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "fp32", "bf16")
#: Fidelity bar for reduced precision: every output's cosine similarity to fp32 eager.
MIN_COSINE = 0.999
_CHECK_IMAGES = 16
#: ``auto`` converts to OpenVINO only for workloads that repay the one-off conversion
#: (a few seconds; cached on disk afterwards).
OPENVINO_MIN_ITEMS = 256


def cache_dir() -> Path:
    """Where converted models are cached (``$TRANSFERKIT_CACHE`` or ``~/.cache/transferkit``)."""
    root = os.environ.get("TRANSFERKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "transferkit")
    return Path(root)


def _block_openvino_telemetry() -> None:
    """Keep OpenVINO's model converter from sending usage telemetry.

    ``openvino.convert_model`` reports each conversion to Google Analytics through the
    ``openvino_telemetry`` package, forking a process per event (~20 per conversion, each
    failing without network and warning about LanceDB's fork safety). transferkit never
    phones home on its users' behalf: when ``openvino_telemetry`` is not already imported,
    it is marked unavailable, and OpenVINO then uses its built-in no-op stub.
    """
    import sys

    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    sys.modules.setdefault("openvino_telemetry.backend", None)  # type: ignore[arg-type]


def openvino_available() -> bool:
    _block_openvino_telemetry()
    try:
        import openvino  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install counts as unavailable
        return False
    return True


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _fingerprint(module: torch.nn.Module, input_size: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(type(module).__name__.encode())
    h.update(str(input_size).encode())
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class InferenceRunner:
    """Run a frozen ``(B, 3, H, W) -> (B, D)`` module as fast as fidelity allows.

    Args:
        module: the frozen module (it is put in eval mode).
        input_size: side of the square input (for conversion).
        device: the torch device; non-CPU devices always use the torch backend.
        backend: ``auto`` (OpenVINO on CPU when installed, else torch), ``torch`` or ``openvino``.
        precision: ``auto`` (bf16 if it passes the fidelity check, else fp32), ``fp32`` or ``bf16``.
        min_cosine: fidelity bar of the ``auto`` check.
        expected_items: how many images will be run; ``auto`` picks OpenVINO only from
            :data:`OPENVINO_MIN_ITEMS` on (None = many).

    Attributes:
        info: backend, precision, ``check_min_cosine`` and ``setup_seconds`` once the first batch ran.
    """

    def __init__(self, module: torch.nn.Module, *, input_size: int, device: torch.device | str = "cpu",
                 backend: str = "auto", precision: str = "auto", min_cosine: float = MIN_COSINE,
                 expected_items: int | None = None):
        if backend not in BACKENDS:
            raise ConfigError(f"`backend` must be one of {', '.join(BACKENDS)}; got {backend!r}.")
        if precision not in PRECISIONS:
            raise ConfigError(f"`precision` must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
        self.module = module.eval()
        self.input_size = int(input_size)
        self.device = torch.device(device)
        self.requested = (backend, precision)
        self.min_cosine = float(min_cosine)
        if self.device.type != "cpu":
            if backend == "openvino":
                raise ConfigError("--backend openvino runs on the CPU only; use --backend torch (or auto) with --device cuda.")
            backend = "torch"
        elif backend == "auto":
            big = expected_items is None or expected_items >= OPENVINO_MIN_ITEMS
            backend = "openvino" if big and openvino_available() else "torch"
        elif backend == "openvino" and not openvino_available():
            raise ConfigError("--backend openvino needs the openvino package: pip install openvino. Or use --backend torch.")
        self.backend = backend
        self.precision = precision
        self._compiled = None
        self.info: dict[str, Any] = {"backend": backend, "precision": precision}

    # -- torch -------------------------------------------------------------------------------------
    def _torch_forward(self, x: torch.Tensor, bf16: bool) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.device.type == "cuda":
                dtype = torch.bfloat16 if (bf16 or torch.cuda.is_bf16_supported()) else torch.float16
                with torch.autocast("cuda", dtype=dtype):
                    return self.module(x).float()
            if bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return self.module(x).float()
            return self.module(x)

    # -- openvino ----------------------------------------------------------------------------------
    def _ov_model(self):
        import openvino as ov

        folder = cache_dir() / "openvino"
        key = _fingerprint(self.module, self.input_size)
        xml = folder / f"{key}.xml"
        core = ov.Core()
        try:  # compiled-blob cache: later runs skip most of the compilation
            (folder / "compiled").mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(folder / "compiled")})
        except Exception as exc:  # noqa: BLE001 - caching is an optimisation only
            log.debug("no OpenVINO compile cache: %s", exc)
        if xml.exists():
            try:
                return core, core.read_model(str(xml))
            except Exception:  # noqa: BLE001 - a corrupt cache entry is rebuilt
                log.warning("Ignoring unreadable OpenVINO cache entry %s; converting again.", xml)
        import warnings

        _block_openvino_telemetry()
        example = torch.zeros(1, 3, self.input_size, self.input_size)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.trace deprecation notices from the converter
            model = ov.convert_model(self.module.cpu().to(memory_format=torch.contiguous_format), example_input=example)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{key}.{os.getpid()}.xml"
            ov.save_model(model, str(tmp), compress_to_fp16=False)
            os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
            os.replace(tmp, xml)
        except OSError as exc:  # caching is an optimisation only
            log.debug("cannot cache OpenVINO model: %s", exc)
        return core, model

    def _ov_compile(self, core, model, bf16: bool):
        cfg = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "PERFORMANCE_HINT": "LATENCY"}
        return core.compile_model(model, "CPU", cfg)

    @staticmethod
    def _ov_run(compiled, x: torch.Tensor) -> torch.Tensor:
        out = compiled(x.contiguous().numpy())[0]
        return torch.from_numpy(out.copy())

    # -- setup with the fidelity check -----------------------------------------------------------
    def _setup(self, x: torch.Tensor) -> None:
        t0 = time.perf_counter()
        want_bf16 = self.precision == "bf16" or (self.precision == "auto" and self._bf16_worth_trying())
        sample = x[:_CHECK_IMAGES]
        ref = None
        if self.precision == "auto" and want_bf16:
            with torch.inference_mode():
                ref = self.module.to(self.device)(sample.to(self.device).contiguous(memory_format=torch.channels_last)).float().cpu()
        if self.backend == "openvino":
            core, model = self._ov_model()
            chosen = None
            if want_bf16:
                compiled = self._ov_compile(core, model, True)
                if ref is None or self._passes(self._ov_run(compiled, sample), ref):
                    chosen = (compiled, "bf16")
            if chosen is None:
                chosen = (self._ov_compile(core, model, False), "fp32")
            self._compiled, prec = chosen
        else:
            self.module.to(self.device).to(memory_format=torch.channels_last)
            prec = "fp32"
            if want_bf16 and (ref is None or self._passes(self._torch_forward(sample, True).cpu(), ref)):
                prec = "bf16"
        self.precision_used = prec
        self.info.update({"precision": prec, "setup_seconds": round(time.perf_counter() - t0, 3)})
        if ref is not None:
            self.info["check_images"] = len(sample)

    def _bf16_worth_trying(self) -> bool:
        if self.device.type == "cuda":
            return False  # torch autocast on CUDA is chosen separately
        return cpu_has_bf16()

    def _passes(self, out: torch.Tensor, ref: torch.Tensor) -> bool:
        cos = torch.nn.functional.cosine_similarity(out.float().reshape(len(ref), -1), ref.reshape(len(ref), -1), dim=1)
        worst = float(cos.min())
        self.info["check_min_cosine"] = round(worst, 6)
        return worst >= self.min_cosine

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a batch, as a float32 tensor (on ``device`` for torch, CPU for OpenVINO)."""
        if not hasattr(self, "precision_used"):
            self._setup(x)
        if self.backend == "openvino":
            return self._ov_run(self._compiled, x.cpu())
        return self._torch_forward(x, self.precision_used == "bf16").float()
