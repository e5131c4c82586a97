"""Fast inference for frozen feature extractors, guarded by a fidelity check.

On the CPU, a frozen backbone's forward pass is where embedding and feature-extraction
training spend their time. :class:`InferenceRunner` runs the backend and precision that
:func:`~transferkit.inference.policy.decide` chooses:

- ``openvino`` (CPU): the module is converted once (cached on disk) and compiled by OpenVINO,
  several times faster than eager PyTorch here, especially for depthwise convolutions
  (EfficientNet, MobileNet); bf16 on CPUs with AMX/AVX512-BF16.
- ``torch``: eager PyTorch in channels-last memory; on CUDA, ``auto`` precision is AMP.

``precision="auto"`` tries reduced precision only where the policy says so, and keeps it only if
every output of the first batch passes the bar of :mod:`.fidelity` against fp32 (on OpenVINO its
fp32 compilation, itself checked against eager PyTorch when converted); the precision recorded
is what the backend actually runs (OpenVINO runs a "bf16" graph in fp32 on a CPU without native
bf16). ResNet-18 keeps cos >= 0.9999 in bf16; EfficientNet-Lite0 falls to cos 0.04 on some photos,
so its registry entry says ``bf16_safe=False`` and ``auto`` does not try bf16 for it.

A caller that can name the weights cheaply passes ``weights_key`` and a *builder* instead of the
module: on a warm cache the PyTorch module is then never built.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from . import openvino_backend as ovb
from .cache import ConversionCache, module_key
from .cpu import CpuFeatures
from .fidelity import CHECK_IMAGES, CONVERSION_CHECK_IMAGES, MIN_COSINE, PrecisionVerdicts, worst_cosine
from .policy import BACKENDS, PRECISIONS, InferenceDecision, decide, reduced_dtype, validate
from .torch_backend import forward

__all__ = ["BACKENDS", "PRECISIONS", "InferenceRunner"]

log = logging.getLogger("transferkit")


class InferenceRunner:
    """Run a frozen ``(B, 3, H, W) -> (B, D)`` module as fast as fidelity allows.

    Args:
        module: the frozen module (it is put in eval mode), or a zero-argument callable that
            builds it; the builder is called only when the module is needed (the torch
            backend, a conversion, or a cache without ``weights_key``'s conversion).
        input_size: side of the square input (for conversion).
        device: the torch device; non-CPU devices always use the torch backend.
        backend: ``auto``, ``torch`` or ``openvino`` (see :func:`~transferkit.inference.policy.decide`).
        precision: ``auto`` (reduced precision where the policy tries it and it passes the check,
            else fp32), ``fp32`` or ``bf16``.
        min_cosine: fidelity bar of the ``auto`` check.
        expected_items: how many images will be run (None = many): small jobs stay on torch.
        preprocessing: the :class:`~transferkit.backbones.Preprocessing` of the weights; needed by :meth:`map_uint8`.
        weights_key: identifies the weights in the conversion cache (see :func:`~.cache.model_key`);
            default: a digest of the module's state_dict.
        bf16_safe: False for a model known to fail the bf16 fidelity bar: ``auto`` then runs fp32 without the
            trial; ``precision="bf16"`` still forces bf16. Default: the registry's answer for the module's
            ``name``; True for a builder or an unnamed module.
        cache: where conversions and verdicts are cached; default: ``settings.cache_dir``.
        settings: :class:`~transferkit.config.Settings` (``None``: the environment's), used when ``cache`` is None.
        cpu: the CPU's features for the policy (default: this machine's).
        converted: an ``openvino.Model`` already checked against PyTorch (a file written by ``transferkit export``),
            run instead of converting ``module`` (which is then never built; pass ``precision="fp32"``).

    Attributes:
        decision: the policy's :class:`~transferkit.inference.policy.InferenceDecision`.
        info: backend, precision, ``check_min_cosine`` and ``setup_seconds`` once the first batch ran.
        precision_used: the precision in use once set up (``fp32``, ``bf16``, ``fp16``); None before.
    """

    def __init__(self, module: torch.nn.Module | Callable[[], torch.nn.Module], *, input_size: int,
                 device: torch.device | str = "cpu", backend: str = "auto", precision: str = "auto",
                 min_cosine: float = MIN_COSINE, expected_items: int | None = None, preprocessing=None,
                 weights_key: str | None = None, bf16_safe: bool | None = None, cache: ConversionCache | None = None,
                 settings=None, cpu: CpuFeatures | None = None, converted=None):
        validate(backend, precision)
        if isinstance(module, torch.nn.Module):
            self._module, self._build = module.eval(), None
        else:
            self._module, self._build = None, module
        self.input_size = int(input_size)
        self.preprocessing = preprocessing
        self.device = torch.device(device)
        self.requested = (backend, precision)
        self.precision = precision
        self.min_cosine = float(min_cosine)
        self._key = weights_key
        if bf16_safe is None:
            from ..backbones import backbone_bf16_safe

            bf16_safe = backbone_bf16_safe(str(getattr(module, "name", ""))) if isinstance(module, torch.nn.Module) else True
        self.bf16_safe = bool(bf16_safe)
        self.cache = cache if cache is not None else ConversionCache.from_settings(settings)
        self.cpu = cpu if cpu is not None else CpuFeatures.from_system()
        self.decision: InferenceDecision = decide(
            backend, precision, device_type=self.device.type, cpu=self.cpu, openvino_available=ovb.openvino_available,
            bf16_safe=self.bf16_safe, expected_items=expected_items, cached_conversion=self._conversion_cached)
        self.backend = self.decision.backend
        self.precision_used: str | None = None
        self._model = converted  # the converted openvino.Model, once loaded
        self._verified = converted is not None  # the conversion was checked against eager PyTorch (given: at export)
        self._compiled = None  # float-input graph
        self._compiled_u8 = None  # uint8-input graph (map_uint8)
        self._async: ovb.AsyncRunner | None = None
        self.info: dict[str, Any] = {"backend": self.backend, "precision": precision}

    @property
    def module(self) -> torch.nn.Module:
        """The PyTorch module (built on first use when a builder was given)."""
        if self._module is None:
            self._module = self._build().eval()
        return self._module

    @property
    def weights_key(self) -> str:
        """The conversion cache's key for these weights (a state_dict digest unless given)."""
        if self._key is None:
            self._key = module_key(self.module, self.input_size)
        return self._key

    def _conversion_cached(self) -> bool:
        try:
            return self.cache.cached_model_info(self.weights_key) is not None
        except Exception:  # noqa: BLE001 - a module that cannot be digested simply stays on torch
            return False

    def reduced_dtype(self) -> torch.dtype:
        """The torch backend's reduced precision (bf16; fp16 AMP on a GPU without bf16 or for a bf16-unsafe model)."""
        gpu_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        return reduced_dtype(self.device.type, self.precision, bf16_safe=self.bf16_safe, gpu_bf16=gpu_bf16)

    def verdicts(self) -> PrecisionVerdicts:
        """The remembered bf16 verdicts of these weights on this backend and device."""
        return PrecisionVerdicts(self.cache, self.weights_key, self.backend, self.device.type, self.min_cosine)

    def _torch(self, x: torch.Tensor) -> torch.Tensor:
        dtype = None if self.precision_used == "fp32" else self.reduced_dtype()
        return forward(self.module, x, device=self.device, autocast_dtype=dtype)

    # -- set-up: the precision and the fidelity check on the first batch -------------------------
    def _setup(self, x: torch.Tensor, x_u8: np.ndarray | None = None) -> None:
        """Choose the precision on the first batch and compile (``x_u8``: the same images as uint8 ``(B, H, W, 3)``)."""
        t0 = time.perf_counter()
        want = self.decision.try_reduced
        if self.decision.bf16_skipped:
            self.info["bf16_skipped"] = self.decision.bf16_skipped
        check = self.precision == "auto" and want
        if check and (verdict := self.verdicts().recall()) is not None:  # an earlier run answered: no check
            want, check = verdict.bf16, False
            self.info.update(check_min_cosine=verdict.min_cosine, check_cached=True)
        n = CHECK_IMAGES
        prec, checked = None, False
        if self.backend == "openvino":
            chosen = self._setup_openvino(x[:n], None if x_u8 is None else x_u8[:n], want, check)
            if chosen is None:  # the conversion does not reproduce eager PyTorch
                self.backend = self.info["backend"] = "torch"
                self._model = None
            else:
                prec, checked = chosen
        if prec is None:
            prec, checked = self._setup_torch(x[:n], want, check)
        self.precision_used = prec
        self.info.update({"precision": prec, "setup_seconds": round(time.perf_counter() - t0, 3)})
        if checked:
            self.info["check_images"] = min(n, len(x))
            self.verdicts().remember(prec != "fp32", self.info["check_min_cosine"])

    def _setup_torch(self, x: torch.Tensor, want: bool, check: bool) -> tuple[str, bool]:
        ref = forward(self.module.to(self.device), x, device=self.device).cpu() if check else None
        self.module.to(self.device).to(memory_format=torch.channels_last)
        if want:
            dtype = self.reduced_dtype()
            if ref is None or self._passes(forward(self.module, x, device=self.device, autocast_dtype=dtype).cpu(), ref):
                return ("fp16" if dtype == torch.float16 else "bf16"), check
        return "fp32", check

    def _setup_openvino(self, x: torch.Tensor, x_u8: np.ndarray | None, want: bool, check: bool) -> tuple[str, bool] | None:
        """``(precision, whether a bf16 check ran)`` once compiled, or None when the conversion fails its check."""
        model = self._load_model()
        u8 = x_u8 is not None
        graph = ovb.uint8_model(model, self.preprocessing) if u8 else model
        sample = ovb.planar(x_u8) if u8 else x
        fp32 = bf16 = bf16_out = None
        if want:
            bf16 = self._compile(graph, True, u8)
            if ovb.compiled_precision(bf16) != "bf16":  # the CPU plugin runs it in f32: it is the fp32 graph
                fp32, bf16, want, check = bf16, None, False, False
                self.info["bf16_unavailable"] = "OpenVINO runs this model in fp32 on this CPU"
        if want and check and not self._verified:  # a first run: both checks at once if bf16 is that close
            bf16_out = ovb.run(bf16, sample)
            if self._verify_conversion(bf16_out, x, bf16=True):
                self.info["check_min_cosine"] = round(self.info["conversion_min_cosine"], 6)
                return self._keep(bf16, u8, "bf16"), True
        need_ref = check or not self._verified
        if fp32 is None and (need_ref or not want):
            fp32 = self._compile(graph, False, u8)
        ref = ovb.run(fp32, sample if check else sample[:CONVERSION_CHECK_IMAGES]) if need_ref else None
        if not self._verified and not self._verify_conversion(ref, x):
            return None
        if want and (not check or self._passes(bf16_out if bf16_out is not None else ovb.run(bf16, sample), ref)):
            return self._keep(bf16, u8, "bf16"), check
        return self._keep(fp32, u8, "fp32"), check

    def _keep(self, compiled, u8: bool, precision: str) -> str:
        if u8:
            self._compiled_u8 = compiled
        else:
            self._compiled = compiled
        return precision

    def _passes(self, out: torch.Tensor, ref: torch.Tensor) -> bool:
        worst = worst_cosine(out, ref)
        self.info["check_min_cosine"] = round(worst, 6)
        return worst >= self.min_cosine

    def _verify_conversion(self, out: torch.Tensor, x: torch.Tensor, *, bf16: bool = False) -> bool:
        """Compare OpenVINO's outputs with eager PyTorch fp32 on the same images; record the verdict in the cache.

        ``out`` is the fp32 graph's, on the first :data:`CONVERSION_CHECK_IMAGES`; or, on a first run that
        tries bf16 (``bf16=True``), the bf16 graph's on all the check images: within the conversion bar of
        eager fp32 (ResNet-18's are), that passes the conversion and bf16's own bar at once and saves
        compiling the fp32 graph (~0.9 s of a 2 s cold set-up). A bf16 miss is not recorded: fp32 is checked next.
        """
        from . import fidelity

        if not bf16:
            x, out = x[:CONVERSION_CHECK_IMAGES], out[:CONVERSION_CHECK_IMAGES]
        ref = forward(self.module.cpu(), x, device="cpu")
        worst = worst_cosine(out, ref)
        ok = worst >= fidelity.CONVERSION_MIN_COSINE
        self.info["conversion_min_cosine"] = round(worst, 7)
        if bf16 and not ok:
            return False
        self.cache.record_conversion(self.weights_key, {
            "dim": int(ref.shape[1]), "conversion_ok": ok, "conversion_min_cosine": worst, "input_size": self.input_size,
            "checked_precision": "bf16" if bf16 else "fp32"})
        self._verified = True
        if not ok:
            log.warning("OpenVINO's conversion of this model differs from PyTorch (cosine %.5f < %s on the first images); "
                        "using PyTorch instead.", worst, fidelity.CONVERSION_MIN_COSINE)
        return ok

    # -- openvino --------------------------------------------------------------------------------
    def _load_model(self):
        """The converted model (from the cache, or converted now); sets whether it was verified."""
        if self._model is None:
            self._model, self._verified = ovb.load_or_convert(self.cache, self.weights_key, lambda: self.module,
                                                              self.input_size)
        return self._model

    def _compile(self, graph, bf16: bool, throughput: bool):
        return ovb.compile_model(graph, bf16, throughput=throughput, blob_dir=self.cache.blob_dir())

    # -- running ---------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a normalised float batch, as a float32 ``(B, D)`` tensor (on ``device`` for torch, CPU for OpenVINO)."""
        if self.precision_used is None:
            self._setup(x)
        if self.backend == "openvino":
            if self._compiled is None:  # precision was chosen by map_uint8
                self._compiled = self._compile(self._load_model(), self.precision_used == "bf16", False)
            return ovb.run(self._compiled, x.cpu())
        return self._torch(x)

    def map_uint8(self, batches: Iterable[tuple[np.ndarray | None, Any]]) -> Iterator[tuple[torch.Tensor | None, Any]]:
        """Features of uint8 ``(B, H, W, 3)`` image batches (as decoded), pipelined.

        ``batches`` yields ``(images or None, payload)``; this yields ``(features or None,
        payload)`` in the same order, features as float32 CPU tensors. Normalisation uses
        ``preprocessing``; on OpenVINO it runs inside the compiled graph, and the next batch is
        submitted before the previous one is handed back, so the model does not wait for the caller.
        """
        if self.preprocessing is None:
            raise ValueError("map_uint8 needs the runner's `preprocessing`.")
        pending: deque = deque()
        try:
            for x, payload in batches:
                if x is None:
                    pending.append((None, payload))
                else:
                    if self.precision_used is None:
                        self._setup(self.preprocessing.normalize_nhwc(x[:CHECK_IMAGES]), x if self.backend == "openvino" else None)
                    if self.backend == "openvino":
                        pending.append((self._async_runner().submit(x), payload))
                    else:
                        y = self._torch(self.preprocessing.normalize_nhwc(x, self.device))
                        pending.append((y.cpu(), payload))
                while len(pending) > 1:  # keep one batch in flight while the caller handles the previous one
                    yield _collect(*pending.popleft())
            while pending:
                yield _collect(*pending.popleft())
        finally:
            # a caller that stops early (an error, Ctrl-C, a break) leaves requests running: wait for them
            if self._async is not None:
                self._async.wait_all()

    def _async_runner(self) -> ovb.AsyncRunner:
        if self._compiled_u8 is None:  # precision was chosen by __call__ on a float batch
            graph = ovb.uint8_model(self._load_model(), self.preprocessing)
            self._compiled_u8 = self._compile(graph, self.precision_used == "bf16", True)
        if self._async is None:
            self._async = ovb.AsyncRunner(self._compiled_u8)
        return self._async


def _collect(job, payload) -> tuple[torch.Tensor | None, Any]:
    """``(features, payload)`` of a pending entry: an OpenVINO job is waited for; a tensor or None is ready."""
    return (job.result() if isinstance(job, ovb._Job) else job), payload
