"""Running an exported file without PyTorch's model: the runtimes of the parity check, and the extractor that
``embed --model onnx:FILE`` uses.

Embedding runs the file on OpenVINO through :class:`~transferkit.inference.runner.InferenceRunner`,
given the file's graph as its converted model: the same uint8 input graph (normalisation inside),
asynchronous request queue and compiled-blob cache as a converted backbone, and no PyTorch module.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._hashing import bytes_digest, file_digest
from ..errors import ConfigError, MissingDependencyError, unknown_name
from .metadata import ExportMetadata, check_file, format_of, onnx_props, read_openvino

#: How a model name points at an exported file: ``onnx:FILE.onnx`` or ``openvino:FILE.xml``.
PREFIXES = {"onnx:": "onnx", "openvino:": "openvino"}
RUNTIMES = ("onnxruntime", "openvino")


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def check_runtimes(fmt: str, runtime: str) -> list[str]:
    """The runtimes that check a ``fmt`` export: ``auto`` is ONNX Runtime (when installed) and OpenVINO for ONNX,
    OpenVINO for an IR.

    Raises:
        UnknownNameError: an unknown runtime. ConfigError: ONNX Runtime for an IR.
        MissingDependencyError: ONNX Runtime asked for and not installed.
    """
    if runtime == "auto":
        return (["onnxruntime"] if fmt == "onnx" and onnxruntime_available() else []) + ["openvino"]
    if runtime not in RUNTIMES:
        raise unknown_name("runtime", runtime, ("auto", *RUNTIMES))
    if runtime == "onnxruntime":
        if fmt != "onnx":
            raise ConfigError("ONNX Runtime reads ONNX files, not OpenVINO IR. Check an IR with `runtime` openvino (or auto).")
        if not onnxruntime_available():
            raise MissingDependencyError("`runtime` onnxruntime needs the onnxruntime package: pip install 'transferkit[onnxruntime]'; "
                                         "or check with OpenVINO (`runtime` openvino).")
    return [runtime]


class Session:
    """One exported file loaded in one runtime: ``run(x)`` maps float32 ``(B, 3, H, W)`` to the first output."""

    def __init__(self, runtime: str, path: str | os.PathLike):
        self.runtime = runtime
        if runtime == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3  # its notices about graph optimisations are not the user's business
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        else:
            from ..inference.openvino_backend import compile_model, openvino_core

            self._compiled = compile_model(openvino_core().read_model(str(path)), False)

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.runtime == "onnxruntime":
            return self._session.run(None, {"images": x})[0]
        return np.array(self._compiled(x, share_inputs=False)[0])


# -- embedding with an exported file -------------------------------------------------------------
def parse_name(name: str) -> tuple[str, Path]:
    """``onnx:FILE`` / ``openvino:FILE.xml`` -> ``(format, path)``.

    Raises:
        ConfigError: the prefix and the file's suffix disagree.
    """
    prefix = next(p for p in PREFIXES if name.startswith(p))
    fmt, path = PREFIXES[prefix], Path(name[len(prefix):]).expanduser()
    if format_of(path) != fmt:
        other = "onnx" if fmt == "openvino" else "openvino"
        raise ConfigError(f"`model` {name!r} names a {path.suffix} file with the {prefix} prefix. Name an ONNX file as "
                          f"onnx:FILE.onnx and an OpenVINO IR as openvino:FILE.xml (here: {other}:{path}).")
    return fmt, path


def load_exported(path: Path, fmt: str) -> tuple[ExportMetadata, Any, str]:
    """``(metadata, openvino.Model, digest)`` of an exported file.

    Raises:
        DataNotFoundError, ConfigError: see :func:`~.metadata.read_export_metadata`.
    """
    check_file(path)
    if fmt == "onnx":
        meta = ExportMetadata.from_props(onnx_props(path), path=path)  # first: a clear error for a file that is no model
        model, _ = read_openvino(path)
        digest = file_digest(path)
    else:
        model, props = read_openvino(path)
        meta = ExportMetadata.from_props(props, path=path)
        digest = bytes_digest((file_digest(path) + file_digest(path.with_suffix(".bin"))).encode())
    return meta, model, digest


def exported_extractor(cls, name: str, *, weights: str = "default", backend: str = "auto", precision: str = "auto",
                       device: Any = None, exact_resize: bool = False, channels_last: bool = True, settings=None):
    """An ``Extractor`` (``cls``) that embeds with the exported embedder ``name`` (``onnx:FILE``, ``openvino:FILE.xml``)
    on OpenVINO in fp32, without building a PyTorch model.

    Its ``model_id`` names the file (``onnx:model.onnx``) and identifies it by a digest of its bytes; its
    ``source`` is the file's absolute path, so :meth:`~transferkit.Extractor.from_store` rebuilds it.

    Raises:
        DataNotFoundError: no such file. ConfigError: not an exported embedder, or options it cannot honour.
    """
    from ..inference.cache import model_key
    from ..inference.runner import InferenceRunner

    fmt, path = parse_name(name)
    path = path.resolve()
    if str(weights) != "default":
        raise ConfigError(f"`weights` does not apply to an exported model ({name}): its weights are in the file.")
    if backend not in ("auto", "openvino"):
        raise ConfigError(f"An exported model runs on OpenVINO; `backend` {backend!r} needs the PyTorch model. Use "
                          f"`backend` auto, or embed with the run or backbone it was exported from.")
    if precision not in ("auto", "fp32"):
        raise ConfigError(f"An exported model runs in fp32, the precision its parity check passed in; got `precision` "
                          f"{precision!r}. Use `precision` auto or fp32.")
    if device is not None and str(device) not in ("cpu", "auto"):
        raise ConfigError(f"An exported model runs on the CPU (OpenVINO); got `device` {device!r}. Use `device` cpu or auto.")
    meta, model, digest = load_exported(path, fmt)
    if meta.what != "embedder":
        raise ConfigError(f"{path} is an exported {meta.what}: its outputs are class scores, not embeddings. Export the "
                          f"embedder (transferkit export SOURCE --what embedder) to embed with it.")
    from ..inference.openvino_backend import fix_input_size

    pre = meta.preprocessing
    fix_input_size(model, pre.input_size)  # the one size the decoders produce: shape arithmetic folds away

    def no_module():
        raise ConfigError(f"The extractor of {path} runs the exported file and has no PyTorch module. Build one with "
                          f"Extractor.from_run or Extractor.from_backbone.")

    model_id = {"backbone": f"{fmt}:{path.name}", "weights": meta.weights, "weights_digest": digest,
                "preprocessing": pre.to_dict(), "dim": meta.dim,
                "exported": {"format": fmt, "file": str(path), "model": meta.model, "source": meta.source}}
    extractor = cls(no_module, preprocessing=pre, model_id=model_id, source={"backbone": f"{fmt}:{path}", "weights": "default"},
                    device="cpu", channels_last=False, backend="openvino", precision="fp32", exact_resize=exact_resize,
                    bf16_safe=False, settings=settings)
    # the extractor's runner slot, filled with the file's graph instead of a conversion of a PyTorch module
    extractor._runner = InferenceRunner(no_module, input_size=pre.input_size, device="cpu", backend="openvino",
                                        precision="fp32", preprocessing=pre, weights_key=model_key("exported", digest),
                                        bf16_safe=False, settings=settings, converted=model)
    return extractor
