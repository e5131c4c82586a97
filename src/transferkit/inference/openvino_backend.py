"""The OpenVINO backend: one process-wide Core, conversion, compilation, the uint8 graph, the async queue."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from .cache import ConversionCache

log = logging.getLogger("transferkit")

#: ONNX opset of the general conversion route.
ONNX_OPSET = 17
#: Images per asynchronous OpenVINO request (ResNet-18 bf16 end to end: 182 images/s at 16 against 156 at 8).
OV_REQUEST_BATCH = 16


def import_openvino():
    """``import openvino``, without OpenVINO's usage telemetry.

    Importing openvino (it imports its converter, ``openvino.tools.ovc``) and each
    ``convert_model`` report to Google Analytics through ``openvino_telemetry``, forking a
    process per event. transferkit never phones home on its users' behalf, and openvino offers
    no opt-out short of process-wide state (``$CI``, or a consent file in the user's home): so
    when ``openvino_telemetry`` is not already imported it is marked unavailable, and OpenVINO
    then uses its built-in no-op stub. This is transferkit's one ``sys.modules`` edit.
    """
    import sys

    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    sys.modules.setdefault("openvino_telemetry.backend", None)  # type: ignore[arg-type]
    import openvino

    return openvino


def openvino_available() -> bool:
    try:
        import_openvino()
    except Exception:  # noqa: BLE001 - a broken install counts as unavailable
        return False
    return True


_OV_CORE = None
_OV_CORE_LOCK = threading.Lock()


def openvino_core():
    """The process's one ``openvino.Core``, created on first use and kept until exit.

    One, because each Core's CPU plugin swaps the creating thread's signal stack and puts back the
    one it found when destroyed: two Cores freed in creation order left the thread on an unmapped
    stack, and the next signal handled there (Ctrl-C's included) crashed the process with SIGSEGV.
    Options that differ per model (the blob cache folder) go to each ``compile_model`` instead.
    """
    global _OV_CORE
    with _OV_CORE_LOCK:
        if _OV_CORE is None:
            _OV_CORE = import_openvino().Core()
        return _OV_CORE


def cpu_runs_bf16() -> bool:
    """Whether OpenVINO's CPU plugin can run bf16 on this machine (its own capability list)."""
    try:
        return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no openvino, or no CPU plugin
        return False


# -- conversion ----------------------------------------------------------------------------------
def load_or_convert(cache: ConversionCache, key: str, module_fn, input_size: int):
    """``(model, verified)``: the cached conversion under ``key``, else ``module_fn()`` converted and saved.
    ``verified``: the cache records a passed check against eager PyTorch for it."""
    ov = import_openvino()
    xml = cache.model_file(key, ".xml")
    core = openvino_core()
    model = None
    if xml.exists():
        try:
            model = core.read_model(str(xml))
        except Exception:  # noqa: BLE001 - a corrupt cache entry is rebuilt
            log.warning("Ignoring unreadable OpenVINO cache entry %s; converting again.", xml)
    verified = model is not None and cache.cached_model_info(key) is not None
    if model is None:
        model = convert(module_fn(), input_size)
        _save(ov, model, xml)
    return model, verified


def _save(ov, model, xml: Path) -> None:
    try:
        xml.parent.mkdir(parents=True, exist_ok=True)
        tmp = xml.parent / f".{xml.stem}.{os.getpid()}.xml"
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)
    except OSError as exc:  # caching is an optimisation only
        log.debug("cannot cache OpenVINO model: %s", exc)


def convert(module: torch.nn.Module, input_size: int):
    """The module as an ``openvino.Model`` for a static square ``input_size``, constant-folded.

    The native ResNets and EfficientNet-Lite have their graph written from their weights
    (:mod:`.openvino_graph`, 0.05-0.1 s); any other module goes through ONNX (0.4-0.6 s, against
    1.4-3.8 s for ``openvino.convert_model``, with the same compiled graph), and a module the
    exporter rejects through ``openvino.convert_model``. The static size lets shape arithmetic
    (TF "same" padding) fold away (~10% faster).
    """
    ov = import_openvino()

    from .openvino_graph import openvino_model

    module = module.cpu().to(memory_format=torch.contiguous_format)
    try:
        model = openvino_model(module, input_size)
    except Exception as exc:  # noqa: BLE001 - the exporter below is the general path
        log.debug("native OpenVINO graph failed (%s: %s); exporting", type(exc).__name__, exc)
        model = None
    if model is not None:
        return model
    with tempfile.TemporaryDirectory(prefix="transferkit-onnx-") as tmp:
        try:
            path = os.path.join(tmp, "model.onnx")
            export_onnx(module, path, input_size)  # its warnings (exporter and tracer notices) are not acted on here
            model = openvino_core().read_model(path)
        except Exception as exc:  # noqa: BLE001 - any exporter failure: use OpenVINO's own converter
            log.debug("ONNX export failed (%s: %s); using openvino.convert_model", type(exc).__name__, exc)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = ov.convert_model(module, example_input=torch.zeros(1, 3, input_size, input_size))
    return fix_input_size(model, input_size)


def export_onnx(module: torch.nn.Module, path: str | os.PathLike, input_size: int, *, output_names=("features",),
                dynamic_axes: dict | None = None) -> list[warnings.WarningMessage]:
    """Write ``module`` (eval mode, on the CPU) as an ONNX file: the TorchScript exporter at :data:`ONNX_OPSET`,
    constants folded, traced on a zero ``(1, 3, input_size, input_size)`` batch, input ``images``.

    Returns:
        the warnings the exporter and the trace raised, each one (callers show them or drop them).
    """
    example = torch.zeros(1, 3, input_size, input_size)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET, do_constant_folding=True,
                          input_names=["images"], output_names=list(output_names), dynamic_axes=dynamic_axes)
    return list(caught)


def fix_input_size(model, input_size: int):
    """``model`` (changed in place) with its input fixed at ``(-1, 3, input_size, input_size)``, the batch left dynamic,
    and its constants folded: shape arithmetic such as TF "same" padding folds away."""
    ov = import_openvino()
    import openvino.passes as ov_passes

    model.reshape(ov.PartialShape([-1, 3, input_size, input_size]))
    manager = ov_passes.Manager()
    manager.register_pass(ov_passes.ConstantFolding())
    manager.run_passes(model)
    return model


def uint8_model(model, preprocessing):
    """The model with normalisation built in: takes the decoders' uint8 batches as planar ``(B, 3, H, W)``."""
    ov = import_openvino()
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model.clone())
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NCHW"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).mean([m * 255.0 for m in preprocessing.mean]).scale(
        [s * 255.0 for s in preprocessing.std])
    return ppp.build()


# -- compile and run -----------------------------------------------------------------------------
def compile_model(model, bf16: bool, *, throughput: bool = False, blob_dir: str | os.PathLike | None = None):
    """The model compiled for the CPU; ``bf16`` asks for bf16 inference, which the CPU plugin may run in f32
    (a CPU without native bf16): :func:`compiled_precision` says what it runs."""
    config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "PERFORMANCE_HINT": "THROUGHPUT" if throughput else "LATENCY"}
    if blob_dir is not None:  # per call: the Core is shared
        config["CACHE_DIR"] = str(blob_dir)
    return openvino_core().compile_model(model, "CPU", config)


def compiled_precision(compiled) -> str:
    """``bf16`` or ``fp32``: the precision a compiled model actually runs in (its ``INFERENCE_PRECISION_HINT``)."""
    hint = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
    return "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32"


def run(compiled, x) -> torch.Tensor:
    """One synchronous run on a float tensor or a uint8 array; outputs as a float32 ``(B, D)`` tensor."""
    x = x.contiguous().numpy() if isinstance(x, torch.Tensor) else np.ascontiguousarray(x)
    # share_inputs=False: sharing binds x's memory to the graph's own request, and a queue made later on the
    # same graph then copied other images into it, i.e. into the caller's batch
    out = compiled(x, share_inputs=False)[0]
    out = torch.from_numpy(out.copy())
    return out.reshape(len(out), -1)


def planar(x: np.ndarray) -> np.ndarray:
    """uint8 ``(B, H, W, 3)`` -> C-contiguous ``(B, 3, H, W)``: free for the decoders' batches (stacked planar)."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class AsyncRunner:
    """A compiled uint8 graph behind an ``AsyncInferQueue``: each batch is split into requests of
    :data:`OV_REQUEST_BATCH` images that run on all of OpenVINO's streams while the caller works
    (1.3-1.8x the images/s of one synchronous request per batch)."""

    def __init__(self, compiled):
        ov = import_openvino()
        nreq = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.queue = ov.AsyncInferQueue(compiled, max(1, nreq))
        self.queue.set_callback(_Job.on_done)

    def submit(self, x: np.ndarray) -> _Job:
        """Start uint8 ``(B, H, W, 3)`` images; :meth:`_Job.result` waits for their features."""
        x = planar(x)
        starts = range(0, len(x), OV_REQUEST_BATCH)
        job = _Job(len(starts))
        for k, start in enumerate(starts):
            self.queue.start_async(x[start:start + OV_REQUEST_BATCH], (job, k))
        return job

    def wait_all(self) -> None:
        """Wait for every request and its callback to return: a process that exits with one still running
        on OpenVINO's thread aborts ("FATAL: exception not rethrown")."""
        self.queue.wait_all()


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
