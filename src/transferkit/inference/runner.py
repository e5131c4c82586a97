"""Fast inference for frozen feature extractors, guarded by a fidelity check.

On the CPU, a frozen backbone's forward pass is where embedding and feature-extraction
training spend their time. :class:`InferenceRunner` picks the fastest backend that keeps
the features faithful to the fp32 eager model:

- ``openvino`` (CPU): the module is converted once (cached on disk) and compiled by
  OpenVINO, whose CPU kernels are several times faster than eager PyTorch here, especially
  for depthwise convolutions (EfficientNet, MobileNet). It can run in bf16 on CPUs with
  AMX/AVX512-BF16.
- ``torch``: eager PyTorch in channels-last memory format; on CUDA, ``auto`` precision is AMP
  (autocast in bf16, or fp16 for a bf16-unsafe model or a GPU without bf16), under the same check.

``precision="auto"`` tries bf16 first and keeps it only if, on the first batch, every
output has cosine similarity >= ``min_cosine`` (0.999) to the fp32 model (eager PyTorch;
on OpenVINO its fp32 compilation, which is itself checked against eager PyTorch when the
model is converted); otherwise it uses fp32. The verdict is remembered for these weights: a
rejection always, a pass when every checked image kept a tenth of the allowed error.
The decision and the measured fidelity are in :attr:`info`. Measured on a 2-core Sapphire
Rapids VM: ResNet-18 (random-init weights) in bf16 keeps cos >= 0.9999 on 3,157 photos, so
bf16 is used; EfficientNet-Lite0 in bf16 falls to cos 0.04 on some steel-surface photos
(0.986 on the first batch of others), so it runs in fp32, and its registry entry says so
(``BackboneSpec.bf16_safe=False``): ``auto`` does not try bf16 for it at all (``bf16_safe``).

A converted model is cached on disk under a key that identifies the weights. A caller that
can name the weights cheaply (a registered backbone's weights file, a run's safetensors)
passes that key and a *builder* instead of the module: on a warm cache the PyTorch module
is then never built and its weights are never loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

log = logging.getLogger("transferkit")

BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "fp32", "bf16")
#: Fidelity bar for reduced precision: every output's cosine similarity to fp32 eager.
MIN_COSINE = 0.999
_CHECK_IMAGES = 16
#: A bf16 pass is remembered only when the check's worst error (1 - cosine) was this many times
#: below the allowed one (see ``InferenceRunner._precision_verdict``).
BF16_PASS_MARGIN = 10
#: ``auto`` converts to OpenVINO only for workloads that repay the one-off conversion
#: (a few seconds; cached on disk afterwards).
OPENVINO_MIN_ITEMS = 256
#: ... or, once a checked conversion of the same weights is cached, from this many images on.
#: Measured with `transferkit embed` on a warm cache (2 cores): 32 photos, EfficientNet-Lite0
#: 1.5-1.8 s inside the run on OpenVINO against 2.3-2.4 s on torch, ResNet-18 1.7-1.9 against
#: 1.6-2.4 s; 160 photos, EfficientNet-Lite0 3.4-3.5 against 7.3-8.3 s (re-measured with 157
#: photos: 3.2-3.3 against 5.9-7.2 s), ResNet-18 2.6-3.1 against 4.2-5.1 s.
OPENVINO_MIN_ITEMS_CACHED = 32
#: ... or, for a model that torch runs in fp32 because bf16 distorts it (``bf16_safe=False``:
#: EfficientNet-Lite0, whose eager fp32 forward is 3.6x slower than OpenVINO's here), from this
#: many. Measured cold (conversion included), `transferkit embed`, time inside the run: 96 photos
#: 4.5-4.6 s on OpenVINO against 4.5-5.3 s on torch; 128: 4.2-4.9 against 6.2-6.5 s; 160: 4.6-4.7
#: against 6.6-7.0 s.
OPENVINO_MIN_ITEMS_FP32 = 128
#: A conversion is used only if its fp32 outputs keep this cosine similarity to eager PyTorch.
CONVERSION_MIN_COSINE = 0.9999
#: Images of the first batch that eager PyTorch runs to check a new conversion (a wrong graph
#: shows on any image; precision, checked on _CHECK_IMAGES, depends more on the data).
_CONVERSION_CHECK_IMAGES = 8
#: ONNX opset of the conversion route (see ``InferenceRunner._ov_convert``).
ONNX_OPSET = 17
#: Bumped when the conversion recipe changes, so older cache entries are not reused.
CONVERSION_VERSION = 3
#: Images per asynchronous OpenVINO request. Measured end to end (`embed_folder`, 3,157 photos,
#: 2 cores, alternating runs): ResNet-18 bf16 182 img/s at 16 against 156 at 8 (mean of 6 runs
#: each; 32 within noise of 16); EfficientNet-Lite0 fp32 152 against 154 (3 runs each).
OV_REQUEST_BATCH = 16


def cache_dir() -> Path:
    """Where converted models are cached (``$TRANSFERKIT_CACHE`` or ``~/.cache/transferkit``)."""
    root = os.environ.get("TRANSFERKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "transferkit")
    return Path(root)


def model_key(*parts: object) -> str:
    """A cache key for a converted model from parts that identify weights and input size (e.g. a file digest)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"conversion-v{CONVERSION_VERSION}".encode())
    for part in parts:
        h.update(b"\0" + str(part).encode())
    return h.hexdigest()


def _ov_cache_file(key: str, suffix: str) -> Path:
    """``<cache>/openvino/<key>-s<suffix>``: the converted model (``.xml``/``.bin``) and its record (``.json``)."""
    return cache_dir() / "openvino" / f"{key}-s{suffix}"


def _read_record(path: Path) -> dict[str, Any] | None:
    """A small JSON record from the cache, or None if it is missing or unreadable (the cache is an optimisation)."""
    import json

    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _write_record(path: Path, record: dict[str, Any]) -> None:
    from .._io import write_json_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)
    except OSError as exc:  # an optimisation only
        log.debug("cannot write cache record %s: %s", path, exc)


def cached_model_info(key: str) -> dict[str, Any] | None:
    """What the cache knows about the model converted under ``key`` (its output ``dim`` and the
    conversion check), or None when there is no verified conversion to run without the module."""
    info = _read_record(_ov_cache_file(key, ".json"))
    try:
        ok = info is not None and info.get("conversion_ok") is True and int(info["dim"]) > 0
    except (KeyError, TypeError, ValueError):
        return None
    xml = _ov_cache_file(key, ".xml")
    return info if ok and xml.exists() and xml.with_suffix(".bin").exists() else None


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


_OV_CORE = None
_OV_CORE_LOCK = threading.Lock()


def openvino_core():
    """The process's one ``openvino.Core``, created on first use and kept until exit.

    One, not one per model, because of how OpenVINO's CPU plugin (2026.4) manages signal
    stacks: each Core's plugin gives the thread that creates it an alternate signal stack
    (for AMX) and, when destroyed, unmaps it and puts back the stack it found. Two Cores
    whose lifetimes overlap and end in creation order leave the thread on the first one's
    unmapped stack, and the next signal the process handles on that stack (Python's own
    handlers, Ctrl-C's included, ask for it) kills it with SIGSEGV. Reproduced here: two
    Cores, each compiling a model, deleted oldest first, then ``os.kill(os.getpid(), SIGUSR1)``
    -> exit 139; the same with one Core -> the handler runs. The test suite run in one
    process died the same way (SIGSEGV, ``si_code`` SI_KERNEL, while evaluating with
    DataLoader worker processes). Compile options that differ per model (the blob cache
    folder) are passed to each ``compile_model`` instead of being set on the Core.
    """
    global _OV_CORE
    with _OV_CORE_LOCK:
        if _OV_CORE is None:
            import openvino as ov

            _OV_CORE = ov.Core()
        return _OV_CORE


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
        module: the frozen module (it is put in eval mode), or a zero-argument callable that
            builds it; the builder is called only when the module is needed (the torch
            backend, a conversion, or a cache without ``weights_key``'s conversion).
        input_size: side of the square input (for conversion).
        device: the torch device; non-CPU devices always use the torch backend.
        backend: ``auto`` (OpenVINO on CPU when installed, else torch), ``torch`` or ``openvino``.
        precision: ``auto`` (bf16, or fp16 AMP on CUDA, if it passes the fidelity check, else fp32),
            ``fp32`` or ``bf16``.
        min_cosine: fidelity bar of the ``auto`` check.
        expected_items: how many images will be run; ``auto`` picks OpenVINO only from
            :data:`OPENVINO_MIN_ITEMS` on (None = many), from :data:`OPENVINO_MIN_ITEMS_FP32` on
            for a ``bf16_safe=False`` model, or from :data:`OPENVINO_MIN_ITEMS_CACHED` on when these
            weights' conversion is already cached.
        preprocessing: the :class:`~transferkit.backbones.Preprocessing` of the weights;
            needed by :meth:`map_uint8` (normalisation of uint8 images).
        weights_key: identifies the weights for the conversion cache (see :func:`model_key`);
            default: a hash of the module's state_dict.
        bf16_safe: False for a model known to fail the bf16 fidelity bar (a backbone whose
            ``BackboneSpec.bf16_safe`` is False): ``auto`` then runs fp32 without the trial,
            which would cost a compile and a run of the check images, and could pass on a
            first batch that happens to be benign. ``precision="bf16"`` still forces bf16.
            Default: the registry's answer for the module's ``name`` (a registered backbone
            names itself); True for a builder or an unnamed module.

    Attributes:
        info: backend, precision, ``check_min_cosine`` and ``setup_seconds`` once the first batch ran.
    """

    def __init__(self, module: torch.nn.Module, *, input_size: int, device: torch.device | str = "cpu",
                 backend: str = "auto", precision: str = "auto", min_cosine: float = MIN_COSINE,
                 expected_items: int | None = None, preprocessing=None, weights_key: str | None = None,
                 bf16_safe: bool | None = None):
        if backend not in BACKENDS:
            raise ConfigError(f"`backend` must be one of {', '.join(BACKENDS)}; got {backend!r}.")
        if precision not in PRECISIONS:
            raise ConfigError(f"`precision` must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
        if isinstance(module, torch.nn.Module):
            self._module, self._build = module.eval(), None
        else:
            self._module, self._build = None, module
        self.input_size = int(input_size)
        self.preprocessing = preprocessing
        self.device = torch.device(device)
        self.requested = (backend, precision)
        self.min_cosine = float(min_cosine)
        self._key = weights_key
        if bf16_safe is None:
            from ..backbones import backbone_bf16_safe

            bf16_safe = backbone_bf16_safe(str(getattr(module, "name", ""))) if isinstance(module, torch.nn.Module) else True
        self.bf16_safe = bool(bf16_safe)
        if self.device.type != "cpu":
            if backend == "openvino":
                raise ConfigError("--backend openvino runs on the CPU only; use --backend torch (or auto) with --device cuda.")
            backend = "torch"
        elif backend == "auto":
            backend = "openvino" if self._openvino_pays(expected_items) and openvino_available() else "torch"
        elif backend == "openvino" and not openvino_available():
            raise ConfigError("--backend openvino needs the openvino package: pip install openvino. Or use --backend torch.")
        self.backend = backend
        self.precision = precision
        self._compiled = None
        self._ov_parts = None  # (core, model) once converted
        self._ov_blob_dir: str | None = None  # OpenVINO's compiled-blob cache
        self._unverified = False  # the OpenVINO model has not yet been checked against eager PyTorch
        self._queue = None  # OpenVINO AsyncInferQueue of the uint8 model
        self._compiled_u8 = None
        self.info: dict[str, Any] = {"backend": backend, "precision": precision}

    def _openvino_pays(self, n: int | None) -> bool:
        """Whether ``n`` images repay converting (or, when cached, loading) the model for OpenVINO."""
        if n is None or n >= OPENVINO_MIN_ITEMS or (not self.bf16_safe and n >= OPENVINO_MIN_ITEMS_FP32):
            return True
        if n < OPENVINO_MIN_ITEMS_CACHED:
            return False
        try:
            return cached_model_info(self._weights_key()) is not None
        except Exception:  # noqa: BLE001 - a module that cannot be fingerprinted simply stays on torch
            return False

    @property
    def module(self) -> torch.nn.Module:
        """The PyTorch module (built on first use when a builder was given)."""
        if self._module is None:
            self._module = self._build().eval()
        return self._module

    # -- torch -------------------------------------------------------------------------------------
    def _torch_forward(self, x: torch.Tensor, reduced: bool) -> torch.Tensor:
        """Forward pass; ``reduced``: under autocast in :meth:`_reduced_dtype`, else fp32."""
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if reduced:
                with torch.autocast(self.device.type, dtype=self._reduced_dtype()):
                    return self.module(x).float()
            return self.module(x)

    def _reduced_dtype(self) -> torch.dtype:
        """The reduced precision: bf16 on the CPU; on CUDA (AMP) bf16 where the GPU supports it and the
        model is not bf16-unsafe, else fp16 (3 more mantissa bits), unless bf16 was asked for."""
        if self.device.type != "cuda" or self.precision == "bf16":
            return torch.bfloat16
        return torch.bfloat16 if (self.bf16_safe and torch.cuda.is_bf16_supported()) else torch.float16

    # -- openvino ----------------------------------------------------------------------------------
    def _ov_model(self):
        """``(core, model)``: the module converted for a static ``input_size`` and constant-folded, cached on disk."""
        if self._ov_parts is not None:
            return self._ov_parts
        import openvino as ov

        xml = _ov_cache_file(self._weights_key(), ".xml")
        folder = xml.parent
        core = openvino_core()
        try:  # compiled-blob cache: later runs skip most of the compilation
            (folder / "compiled").mkdir(parents=True, exist_ok=True)
            self._ov_blob_dir = str(folder / "compiled")
        except OSError as exc:  # caching is an optimisation only
            log.debug("no OpenVINO compile cache: %s", exc)
        model = None
        if xml.exists():
            try:
                model = core.read_model(str(xml))
            except Exception:  # noqa: BLE001 - a corrupt cache entry is rebuilt
                log.warning("Ignoring unreadable OpenVINO cache entry %s; converting again.", xml)
        # a conversion is checked against eager PyTorch once, when it is made (or found unchecked)
        self._unverified = model is None or cached_model_info(self._weights_key()) is None
        if model is None:
            model = self._ov_convert(ov, core)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f".{xml.stem}.{os.getpid()}.xml"
                ov.save_model(model, str(tmp), compress_to_fp16=False)
                os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
                os.replace(tmp, xml)
            except OSError as exc:  # caching is an optimisation only
                log.debug("cannot cache OpenVINO model: %s", exc)
        self._ov_parts = (core, model)
        return self._ov_parts

    def _ov_convert(self, ov, core):
        """Convert with the spatial size fixed, so shape arithmetic (TF "same" padding) folds away (~10% faster).

        The native ResNets and EfficientNet-Lite have their graph written directly from their
        weights (:mod:`transferkit.backbones._native_openvino`: 0.05 s for EfficientNet-Lite0,
        0.1 s for ResNet-18, against 1.09 s and 0.56 s for a first export in a process). Any
        other module goes through ONNX (PyTorch's TorchScript exporter, then OpenVINO's ONNX
        reader): measured 0.6 s for EfficientNet-Lite0 and 0.4 s for ResNet-18, against
        2.3-3.8 s and 1.4 s for ``openvino.convert_model``; the compiled graphs have the same
        operations (counted by type) and ran within 2% of each other's speed. A
        module the exporter cannot handle is converted by ``openvino.convert_model``.
        """
        import tempfile
        import warnings

        import openvino.passes as ov_passes

        from .openvino_graph import openvino_model

        _block_openvino_telemetry()
        module = self.module.cpu().to(memory_format=torch.contiguous_format)
        try:
            model = openvino_model(module, self.input_size)
        except Exception as exc:  # noqa: BLE001 - the exporter below is the general path
            log.debug("native OpenVINO graph failed (%s: %s); exporting", type(exc).__name__, exc)
            model = None
        if model is not None:
            return model
        example = torch.zeros(1, 3, self.input_size, self.input_size)
        with torch.no_grad(), warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="transferkit-onnx-") as tmp:
            warnings.simplefilter("ignore")  # exporter and tracer deprecation notices
            try:
                path = os.path.join(tmp, "model.onnx")
                torch.onnx.export(module, (example,), path, dynamo=False, opset_version=ONNX_OPSET, do_constant_folding=True,
                                  input_names=["images"], output_names=["features"])
                model = core.read_model(path)
            except Exception as exc:  # noqa: BLE001 - any exporter failure: use OpenVINO's own converter
                log.debug("ONNX export failed (%s: %s); using openvino.convert_model", type(exc).__name__, exc)
                model = ov.convert_model(module, example_input=example)
        model.reshape(ov.PartialShape([-1, 3, self.input_size, self.input_size]))
        manager = ov_passes.Manager()
        manager.register_pass(ov_passes.ConstantFolding())
        manager.run_passes(model)
        return model

    def _ov_compile(self, core, model, bf16: bool, *, throughput: bool = False):
        config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "PERFORMANCE_HINT": "THROUGHPUT" if throughput else "LATENCY"}
        if self._ov_blob_dir is not None:  # per call: the Core is shared (see openvino_core)
            config["CACHE_DIR"] = self._ov_blob_dir
        return core.compile_model(model, "CPU", config)

    def _ov_uint8_model(self, core, model):
        """The model with normalisation built in: takes the decoders' uint8 batches as planar ``(B, 3, H, W)`` (see :func:`_planar`)."""
        import openvino as ov
        from openvino.preprocess import PrePostProcessor

        pre = self.preprocessing
        ppp = PrePostProcessor(model.clone())
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NCHW"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        ppp.input().preprocess().convert_element_type(ov.Type.f32).mean([m * 255.0 for m in pre.mean]).scale(
            [s * 255.0 for s in pre.std])
        return ppp.build()

    @staticmethod
    def _ov_run(compiled, x) -> torch.Tensor:
        x = x.contiguous().numpy() if isinstance(x, torch.Tensor) else np.ascontiguousarray(x)
        # share_inputs=False: with its default (True) OpenVINO binds x's memory to the compiled graph's
        # own request, and a queue made later on the same graph (map_uint8's) copied other images into
        # that memory, i.e. into the caller's batch (the first batch of a folder, after the set-up's check)
        out = compiled(x, share_inputs=False)[0]
        return torch.from_numpy(out.copy())

    # -- setup with the fidelity check -----------------------------------------------------------
    def _setup(self, x: torch.Tensor, x_u8: np.ndarray | None = None) -> None:
        """Choose the precision on the first batch and compile (``x_u8``: the same images as uint8 ``(B, H, W, 3)``)."""
        t0 = time.perf_counter()
        want_bf16 = self.precision == "bf16" or (self.precision == "auto" and self._bf16_worth_trying())
        verdict = self._precision_verdict() if self.precision == "auto" and want_bf16 else None
        if verdict is not None:  # an earlier run answered for these weights: one compile, no check
            want_bf16, self.info["check_min_cosine"] = verdict
            self.info["check_cached"] = True
        check = self.precision == "auto" and want_bf16 and verdict is None
        n = _CHECK_IMAGES
        prec = None
        if self.backend == "openvino":
            prec = self._setup_openvino(x[:n], None if x_u8 is None else x_u8[:n], want_bf16, check)
        if prec is None:  # torch, or a conversion that failed its check
            ref = None
            if check:
                with torch.inference_mode():
                    ref = self.module.to(self.device)(x[:n].to(self.device).contiguous(memory_format=torch.channels_last)).float().cpu()
            self.module.to(self.device).to(memory_format=torch.channels_last)
            prec = "fp32"
            if want_bf16 and (ref is None or self._passes(self._torch_forward(x[:n], True).cpu(), ref)):
                prec = "fp16" if self._reduced_dtype() == torch.float16 else "bf16"
        self.precision_used = prec
        self.info.update({"precision": prec, "setup_seconds": round(time.perf_counter() - t0, 3)})
        if check:
            self.info["check_images"] = min(n, len(x))
            self._remember_precision(prec != "fp32", self.info["check_min_cosine"])

    def _setup_openvino(self, x: torch.Tensor, x_u8: np.ndarray | None, want_bf16: bool, check: bool) -> str | None:
        """Compile for OpenVINO; returns the precision, or None (backend switched to torch) when the
        conversion does not reproduce eager PyTorch."""
        core, model = self._ov_model()
        u8 = x_u8 is not None
        graph = self._ov_uint8_model(core, model) if u8 else model
        sample = _planar(x_u8) if u8 else x
        chosen = None
        if self._unverified and check and want_bf16:  # a first run: both checks at once if bf16 is that close
            compiled = self._ov_compile(core, graph, True, throughput=u8)
            if self._verify_conversion(self._ov_run(compiled, sample), x, bf16=True):
                self.info["check_min_cosine"] = round(self.info["conversion_min_cosine"], 6)
                chosen = (compiled, "bf16")
        if chosen is None:
            chosen = self._choose_checked(core, graph, sample, x, u8, want_bf16, check)
            if chosen is None:
                self.backend = self.info["backend"] = "torch"
                self._ov_parts = None
                return None
        compiled, prec = chosen
        if u8:
            self._compiled_u8 = compiled
        else:
            self._compiled = compiled
        return prec

    def _choose_checked(self, core, graph, sample, x: torch.Tensor, u8: bool, want_bf16: bool, check: bool):
        """``(compiled, precision)`` with the fp32 graph as the reference where a check is due, or None
        when the conversion does not reproduce eager PyTorch."""
        fp32 = ref = None
        if self._unverified or check or not want_bf16:
            fp32 = self._ov_compile(core, graph, False, throughput=u8)
        if self._unverified or check:  # the conversion check alone needs only its first images
            ref = self._ov_run(fp32, sample if check else sample[:_CONVERSION_CHECK_IMAGES])
        if self._unverified and not self._verify_conversion(ref, x):
            return None
        if want_bf16:
            compiled = self._ov_compile(core, graph, True, throughput=u8)
            if not check or self._passes(self._ov_run(compiled, sample), ref):
                return compiled, "bf16"
        return fp32 or self._ov_compile(core, graph, False, throughput=u8), "fp32"

    def _verify_conversion(self, out: torch.Tensor, x: torch.Tensor, *, bf16: bool = False) -> bool:
        """Compare OpenVINO's outputs with eager PyTorch fp32 on the same images; record the verdict in the cache.

        ``out`` is normally the fp32 graph's, on the first :data:`_CONVERSION_CHECK_IMAGES`. On
        a first run that tries bf16 (``bf16=True``) it is the bf16 graph's on all the check
        images: within :data:`CONVERSION_MIN_COSINE` of eager fp32 (ResNet-18's are, at
        0.99999), that passes the conversion and bf16's own bar (0.999) at once and saves
        compiling and running the fp32 graph (0.8-0.95 s of a 2.0-2.1 s cold set-up for ResNet-18
        on 2 cores). A bf16 miss is neither recorded nor logged: the fp32 graph is checked next.
        """
        if not bf16:
            x, out = x[:_CONVERSION_CHECK_IMAGES], out[:_CONVERSION_CHECK_IMAGES]
        with torch.inference_mode():
            ref = self.module.cpu()(x.cpu().contiguous(memory_format=torch.channels_last)).float()
        ref = ref.reshape(len(ref), -1)
        worst = float(torch.nn.functional.cosine_similarity(out.float().reshape(len(ref), -1), ref, dim=1).min())
        ok = worst >= CONVERSION_MIN_COSINE
        self.info["conversion_min_cosine"] = round(worst, 7)
        if bf16 and not ok:
            return False
        _write_record(_ov_cache_file(self._weights_key(), ".json"), {
            "dim": int(ref.shape[1]), "conversion_ok": ok, "conversion_min_cosine": worst, "input_size": self.input_size,
            "checked_precision": "bf16" if bf16 else "fp32"})
        self._unverified = False
        if not ok:
            log.warning("OpenVINO's conversion of this model differs from PyTorch (cosine %.5f < %s on the first images); "
                        "using PyTorch instead.", worst, CONVERSION_MIN_COSINE)
        return ok

    # The bf16 verdict is remembered per weights (cache_dir()/precision/<key>-<backend>.json): a
    # model whose features bf16 distorts is not retried (and recompiled) on every run, and one that
    # passed with a wide margin (every checked image within a tenth of the allowed error, e.g.
    # cos >= 0.9999 for the 0.999 bar) is not checked again, which saves an fp32 compile and two
    # runs of the check images per run. A pass closer to the bar is checked again on the next data.
    def _weights_key(self) -> str:
        """Fingerprint of the module's weights and input size (computed once)."""
        if self._key is None:
            self._key = model_key("state_dict", _fingerprint(self.module, self.input_size))
        return self._key

    def _precision_file(self) -> Path:
        device = "" if self.device.type == "cpu" else f"-{self.device.type}"  # AMP on a GPU is another question
        return cache_dir() / "precision" / f"{self._weights_key()}-{self.backend}{device}.json"

    def _remember_bar(self) -> float:
        return 1.0 - (1.0 - self.min_cosine) / BF16_PASS_MARGIN

    def _precision_verdict(self) -> tuple[bool, float] | None:
        """``(use bf16, the check's min cosine)`` from an earlier run with these weights and bar, or None."""
        rec = _read_record(self._precision_file())
        try:
            if rec is None or rec.get("min_cosine_bar") != self.min_cosine:
                return None
            worst = float(rec["check_min_cosine"])
            if rec.get("bf16") is False or (rec.get("bf16") is True and worst >= self._remember_bar()):
                return bool(rec["bf16"]), worst
        except (KeyError, TypeError, ValueError):
            pass
        return None

    def _remember_precision(self, bf16: bool, worst: float) -> None:
        if not bf16 or worst >= self._remember_bar():
            _write_record(self._precision_file(), {"bf16": bf16, "check_min_cosine": worst, "min_cosine_bar": self.min_cosine})

    def _bf16_worth_trying(self) -> bool:
        """Whether ``auto`` tries reduced precision: AMP on CUDA (fp16 for a bf16-unsafe model), bf16 on a CPU
        that computes it natively, for a model not known to fail the bar."""
        if self.device.type == "cuda":
            return True
        if not self.bf16_safe:
            self.info["bf16_skipped"] = "known to miss the fidelity bar for this model"
            return False
        return cpu_has_bf16()

    def _passes(self, out: torch.Tensor, ref: torch.Tensor) -> bool:
        cos = torch.nn.functional.cosine_similarity(out.float().reshape(len(ref), -1), ref.reshape(len(ref), -1), dim=1)
        worst = float(cos.min())
        self.info["check_min_cosine"] = round(worst, 6)
        return worst >= self.min_cosine

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a normalised float batch, as a float32 tensor (on ``device`` for torch, CPU for OpenVINO)."""
        if not hasattr(self, "precision_used"):
            self._setup(x)
        if self.backend == "openvino":
            if self._compiled is None:
                core, model = self._ov_model()
                self._compiled = self._ov_compile(core, model, self.precision_used == "bf16")
            return self._ov_run(self._compiled, x.cpu())
        return self._torch_forward(x, self.precision_used != "fp32").float()

    def map_uint8(self, batches: Iterable[tuple[np.ndarray | None, Any]]) -> Iterator[tuple[torch.Tensor | None, Any]]:
        """Features of uint8 ``(B, H, W, 3)`` image batches (as decoded), pipelined.

        ``batches`` yields ``(images or None, payload)``; this yields ``(features or None,
        payload)`` in the same order, features as float32 CPU tensors. Normalisation uses
        ``preprocessing``. On OpenVINO the normalisation runs inside the compiled graph, and
        each batch is split into requests of :data:`OV_REQUEST_BATCH` images that run
        asynchronously on all of OpenVINO's streams; the next batch is submitted before the
        previous one is handed back, so the model does not wait for the caller (measured on
        2 cores: 1.3-1.8x the images/s of one synchronous request per batch).
        """
        if self.preprocessing is None:
            raise ValueError("map_uint8 needs the runner's `preprocessing`.")
        pending: deque = deque()
        try:
            for x, payload in batches:
                if x is None:
                    pending.append((None, payload))
                else:
                    if not hasattr(self, "precision_used"):
                        self._setup(self.preprocessing.normalize_nhwc(x[:_CHECK_IMAGES]),
                                    x if self.backend == "openvino" else None)
                    if self.backend == "openvino":
                        pending.append((self._submit_u8(x), payload))
                    else:
                        y = self._torch_forward(self.preprocessing.normalize_nhwc(x, self.device), self.precision_used != "fp32")
                        pending.append((y.float().cpu().reshape(len(y), -1), payload))
                while len(pending) > 1:  # keep one batch in flight while the caller handles the previous one
                    yield _collect(*pending.popleft())
            while pending:
                yield _collect(*pending.popleft())
        finally:
            # A caller that stops early (an error, Ctrl-C, a break) leaves requests running; wait for
            # them here, so none is still running when the process exits: OpenVINO then aborted
            # ("FATAL: exception not rethrown") in a script that stopped reading mid-folder. A job is
            # reported done from inside its last request's callback, which then still has to return
            # on OpenVINO's thread; wait_all() waits for every request and its callback (a process
            # that exited in between aborted: "terminate called without an active exception", 1 run
            # in 24). Every _Job goes through this queue, so this also waits for the pending ones.
            if self._queue is not None:
                self._queue.wait_all()

    def _submit_u8(self, x: np.ndarray) -> _Job:
        import openvino as ov

        if self._compiled_u8 is None:  # precision was chosen by __call__ on a float batch
            core, model = self._ov_model()
            self._compiled_u8 = self._ov_compile(core, self._ov_uint8_model(core, model), self.precision_used == "bf16",
                                                 throughput=True)
        if self._queue is None:
            nreq = int(self._compiled_u8.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._queue = ov.AsyncInferQueue(self._compiled_u8, max(1, nreq))
            self._queue.set_callback(_Job.on_done)
        x = _planar(x)
        starts = range(0, len(x), OV_REQUEST_BATCH)
        job = _Job(len(starts))
        for k, start in enumerate(starts):
            self._queue.start_async(x[start:start + OV_REQUEST_BATCH], (job, k))
        return job


def _planar(x: np.ndarray) -> np.ndarray:
    """uint8 ``(B, H, W, 3)`` -> C-contiguous ``(B, 3, H, W)``: free for the decoders' batches
    (:func:`~transferkit.data.collate_items` stacks them planar), a copy otherwise."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _collect(job, payload) -> tuple[torch.Tensor | None, Any]:
    """``(features, payload)`` of a pending entry: an OpenVINO job is waited for; a tensor or None is ready."""
    return (job.result() if isinstance(job, _Job) else job), payload


class _Job:
    """One batch split over several OpenVINO requests; :meth:`result` waits for all of them."""

    def __init__(self, parts: int):
        self.parts: list[np.ndarray | None] = [None] * parts
        self.left = parts
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.done = threading.Event()

    @staticmethod
    def on_done(request, userdata) -> None:
        job, k = userdata
        try:
            job.parts[k] = request.get_output_tensor(0).data.copy()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            job.error = exc
        with job.lock:
            job.left -= 1
            if job.left == 0:
                job.done.set()

    def result(self) -> torch.Tensor:
        self.done.wait()
        if self.error is not None:
            raise self.error
        out = np.concatenate(self.parts)
        return torch.from_numpy(out.reshape(len(out), -1))
