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
otherwise it uses fp32, and remembers the rejection for these weights. The decision and
the measured fidelity are in :attr:`info`. Measured on a 2-core Sapphire Rapids VM:
ResNet-18 (random-init weights) in bf16 keeps cos >= 0.9999 on 3,157 photos, so bf16 is
used; EfficientNet-Lite0 in bf16 falls to cos 0.04 on some steel-surface photos (0.986 on
the first batch of others), so it runs in fp32.
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
#: Images per asynchronous OpenVINO request (measured on 2 cores: 8 beat 16 and 32 for
#: EfficientNet-Lite0 and was within noise of 16 for ResNet-18).
OV_REQUEST_BATCH = 8


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
        preprocessing: the :class:`~transferkit.backbones.Preprocessing` of the weights;
            needed by :meth:`map_uint8` (normalisation of uint8 images).

    Attributes:
        info: backend, precision, ``check_min_cosine`` and ``setup_seconds`` once the first batch ran.
    """

    def __init__(self, module: torch.nn.Module, *, input_size: int, device: torch.device | str = "cpu",
                 backend: str = "auto", precision: str = "auto", min_cosine: float = MIN_COSINE,
                 expected_items: int | None = None, preprocessing=None):
        if backend not in BACKENDS:
            raise ConfigError(f"`backend` must be one of {', '.join(BACKENDS)}; got {backend!r}.")
        if precision not in PRECISIONS:
            raise ConfigError(f"`precision` must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
        self.module = module.eval()
        self.input_size = int(input_size)
        self.preprocessing = preprocessing
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
        self._ov_parts = None  # (core, model) once converted
        self._key: str | None = None
        self._queue = None  # OpenVINO AsyncInferQueue of the uint8 model
        self._compiled_u8 = None
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
        """``(core, model)``: the module converted for a static ``input_size`` and constant-folded, cached on disk."""
        if self._ov_parts is not None:
            return self._ov_parts
        import openvino as ov

        folder = cache_dir() / "openvino"
        key = self._weights_key() + "-s"
        xml = folder / f"{key}.xml"
        core = ov.Core()
        try:  # compiled-blob cache: later runs skip most of the compilation
            (folder / "compiled").mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(folder / "compiled")})
        except Exception as exc:  # noqa: BLE001 - caching is an optimisation only
            log.debug("no OpenVINO compile cache: %s", exc)
        model = None
        if xml.exists():
            try:
                model = core.read_model(str(xml))
            except Exception:  # noqa: BLE001 - a corrupt cache entry is rebuilt
                log.warning("Ignoring unreadable OpenVINO cache entry %s; converting again.", xml)
        if model is None:
            model = self._ov_convert(ov)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f".{key}.{os.getpid()}.xml"
                ov.save_model(model, str(tmp), compress_to_fp16=False)
                os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
                os.replace(tmp, xml)
            except OSError as exc:  # caching is an optimisation only
                log.debug("cannot cache OpenVINO model: %s", exc)
        self._ov_parts = (core, model)
        return self._ov_parts

    def _ov_convert(self, ov):
        """Convert with the spatial size fixed, so shape arithmetic (TF "same" padding) folds away (~10% faster)."""
        import warnings

        import openvino.passes as ov_passes

        _block_openvino_telemetry()
        example = torch.zeros(1, 3, self.input_size, self.input_size)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.trace deprecation notices from the converter
            model = ov.convert_model(self.module.cpu().to(memory_format=torch.contiguous_format), example_input=example)
        model.reshape(ov.PartialShape([-1, 3, self.input_size, self.input_size]))
        manager = ov_passes.Manager()
        manager.register_pass(ov_passes.ConstantFolding())
        manager.run_passes(model)
        return model

    def _ov_compile(self, core, model, bf16: bool, *, throughput: bool = False):
        hint = "THROUGHPUT" if throughput else "LATENCY"
        return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "PERFORMANCE_HINT": hint})

    def _ov_uint8_model(self, core, model):
        """The model with normalisation built in: takes uint8 ``(B, H, W, 3)`` straight from the decoders."""
        import openvino as ov
        from openvino.preprocess import PrePostProcessor

        pre = self.preprocessing
        ppp = PrePostProcessor(model.clone())
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        ppp.input().preprocess().convert_element_type(ov.Type.f32).mean([m * 255.0 for m in pre.mean]).scale(
            [s * 255.0 for s in pre.std])
        return ppp.build()

    @staticmethod
    def _ov_run(compiled, x) -> torch.Tensor:
        x = x.contiguous().numpy() if isinstance(x, torch.Tensor) else np.ascontiguousarray(x)
        out = compiled(x)[0]
        return torch.from_numpy(out.copy())

    # -- setup with the fidelity check -----------------------------------------------------------
    def _setup(self, x: torch.Tensor, x_u8: np.ndarray | None = None) -> None:
        """Choose the precision on the first batch and compile (``x_u8``: the same images as uint8 NHWC)."""
        t0 = time.perf_counter()
        want_bf16 = self.precision == "bf16" or (self.precision == "auto" and self._bf16_worth_trying())
        rejected = self._rejection() if self.precision == "auto" and want_bf16 else None
        if rejected is not None:  # these weights failed the check before: skip the bf16 compile and check
            want_bf16 = False
            self.info["check_min_cosine"] = rejected
            self.info["check_cached"] = True
        n = _CHECK_IMAGES
        ref = None
        if self.precision == "auto" and want_bf16:
            with torch.inference_mode():
                ref = self.module.to(self.device)(x[:n].to(self.device).contiguous(memory_format=torch.channels_last)).float().cpu()
        if self.backend == "openvino":
            core, model = self._ov_model()
            u8 = x_u8 is not None
            graph = self._ov_uint8_model(core, model) if u8 else model
            sample = x_u8[:n] if u8 else x[:n]
            chosen = None
            if want_bf16:
                compiled = self._ov_compile(core, graph, True, throughput=u8)
                if ref is None or self._passes(self._ov_run(compiled, sample), ref):
                    chosen = (compiled, "bf16")
            if chosen is None:
                chosen = (self._ov_compile(core, graph, False, throughput=u8), "fp32")
            compiled, prec = chosen
            if u8:
                self._compiled_u8 = compiled
            else:
                self._compiled = compiled
        else:
            self.module.to(self.device).to(memory_format=torch.channels_last)
            prec = "fp32"
            if want_bf16 and (ref is None or self._passes(self._torch_forward(x[:n], True).cpu(), ref)):
                prec = "bf16"
        self.precision_used = prec
        self.info.update({"precision": prec, "setup_seconds": round(time.perf_counter() - t0, 3)})
        if ref is not None:
            self.info["check_images"] = len(ref)
            if prec == "fp32":
                self._remember_rejection(self.info["check_min_cosine"])

    # bf16 rejections are remembered per weights (cache_dir()/precision/<fingerprint>.json): a
    # model whose features bf16 distorts on one batch is not retried (and recompiled) on every run.
    def _weights_key(self) -> str:
        """Fingerprint of the module's weights and input size (computed once)."""
        if self._key is None:
            self._key = _fingerprint(self.module, self.input_size)
        return self._key

    def _rejection_file(self) -> Path:
        return cache_dir() / "precision" / f"{self._weights_key()}-{self.backend}.json"

    def _rejection(self) -> float | None:
        try:
            import json

            rec = json.loads(self._rejection_file().read_text())
            if rec.get("bf16") is False and rec.get("min_cosine_bar") == self.min_cosine:
                return float(rec["check_min_cosine"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        return None

    def _remember_rejection(self, worst: float) -> None:
        from ._io import write_json_atomic

        try:
            path = self._rejection_file()
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, {"bf16": False, "check_min_cosine": worst, "min_cosine_bar": self.min_cosine})
        except OSError as exc:  # an optimisation only
            log.debug("cannot remember the bf16 rejection: %s", exc)

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
        """Features of a normalised float batch, as a float32 tensor (on ``device`` for torch, CPU for OpenVINO)."""
        if not hasattr(self, "precision_used"):
            self._setup(x)
        if self.backend == "openvino":
            if self._compiled is None:
                core, model = self._ov_model()
                self._compiled = self._ov_compile(core, model, self.precision_used == "bf16")
            return self._ov_run(self._compiled, x.cpu())
        return self._torch_forward(x, self.precision_used == "bf16").float()

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
                    y = self._torch_forward(self.preprocessing.normalize_nhwc(x, self.device), self.precision_used == "bf16")
                    pending.append((y.float().cpu().reshape(len(y), -1), payload))
            while len(pending) > 1:  # keep one batch in flight while the caller handles the previous one
                yield _collect(*pending.popleft())
        while pending:
            yield _collect(*pending.popleft())

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
        x = np.ascontiguousarray(x)
        starts = range(0, len(x), OV_REQUEST_BATCH)
        job = _Job(len(starts))
        for k, start in enumerate(starts):
            self._queue.start_async(x[start:start + OV_REQUEST_BATCH], (job, k))
        return job


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
