"""``export_model``: a run's classifier or embedder, or a backbone's embedder, as an ONNX file or an OpenVINO IR
that runs without PyTorch, checked against PyTorch before it is written.

Everything is written to a temporary folder beside ``out`` first and moved into place only once
the parity check has passed, so a failed export never leaves a file that looks fine.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ConfigError, ExportError, UnknownNameError, unknown_name
from ..events import Callback, make_reporter
from .graph import ClassifierOutputs, describe_warning, export_onnx_file, size_dependent_layers
from .metadata import OUTPUTS, SUFFIXES, ExportMetadata, set_openvino_metadata, write_onnx_metadata
from .parity import MIN_COSINE, OTHER_SIZE_STEP, PARITY_BATCHES, check_parity, describe
from .runtime import check_runtimes

WHATS = tuple(OUTPUTS)


@dataclass
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        path: the file (``.onnx``, or the IR's ``.xml``); ``files`` lists every file written (the IR's ``.bin`` too).
        format: ``onnx`` or ``openvino``.
        metadata: what the file's metadata says (preprocessing, classes, input shape, parity, ...).
        parity: the checks against PyTorch (see :func:`~transferkit.export.parity.check_parity`).
        warnings: the exporter's warnings, grouped (category, message, count, where).
        seconds: wall time.
    """

    path: Path
    format: str
    metadata: ExportMetadata
    parity: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def min_cosine(self) -> float:
        """The worst cosine similarity to PyTorch over every check."""
        return min(c["min_cosine"] for c in self.parity)

    @property
    def max_abs_diff(self) -> float:
        """The largest absolute difference from PyTorch over every check."""
        return max(c["max_abs_diff"] for c in self.parity)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "files": [str(f) for f in self.files],
                "bytes": sum(f.stat().st_size for f in self.files if f.exists()), "min_cosine": self.min_cosine,
                "max_abs_diff": self.max_abs_diff, "parity": [dict(c) for c in self.parity], "warnings": list(self.warnings),
                "metadata": self.metadata.to_dict(), "seconds": round(self.seconds, 3)}


@dataclass
class _Source:
    module: nn.Module  # the backbone, or the whole classifier
    is_classifier: bool
    name: str
    weights: str
    preprocessing: Any
    classes: list[str]
    record: dict[str, Any]


def export_model(source: Any, *, out: str | os.PathLike, format: str = "onnx", what: str | None = None,
                 weights: str | os.PathLike = "default", runtime: str = "auto", quiet: bool = False,
                 progress: Callback | None = None) -> ExportResult:
    """Export a model to ONNX or OpenVINO IR with a dynamic batch axis and its preprocessing in the file's metadata.

    The exported file is run on the bundled sample's photos at batch 1, 3 and 8 and compared with
    eager PyTorch; every output must keep cosine similarity >= 0.9999 (the check's max abs
    difference and min cosine are reported and stored in the metadata). The height and width stay
    dynamic too where the graph reproduces PyTorch at another size; a model whose padding depends on
    the input size (TensorFlow "same" padding) is exported for its input size only, and says so.

    Args:
        source: a run folder (or :class:`~transferkit.Run`), a backbone name (``efficientnet_lite0``), or an
            in-memory :class:`~transferkit.TransferModel` or backbone from :func:`~transferkit.create_backbone`.
        out: the file to write: ``.onnx``; for OpenVINO the ``.xml`` (its ``.bin`` is written beside it).
        format: ``onnx`` or ``openvino``.
        what: ``embedder`` (output ``features``) or ``classifier`` (outputs ``logits`` and ``probabilities``);
            default: the classifier of a run or a TransferModel, the embedder of a backbone.
        weights: with a backbone name: ``default``, ``none`` or a weights file.
        runtime: what runs the check: ``auto`` (ONNX: ONNX Runtime when installed, and OpenVINO; IR: OpenVINO),
            ``onnxruntime`` or ``openvino``.
        quiet: report nothing. progress: a callback receiving :class:`~transferkit.events.Event` objects.

    Returns:
        an :class:`ExportResult`.

    Raises:
        UnknownNameError: an unknown format, ``what``, runtime or model.
        ConfigError: ``out`` does not fit the format; a classifier asked of a backbone; ``weights`` with a run.
        RunError: a run folder that is not a run.
        MissingDependencyError: ONNX Runtime asked for and not installed.
        ExportError: the exported graph does not reproduce PyTorch (nothing is written).
    """
    t0 = time.perf_counter()
    reporter = make_reporter(progress, quiet=quiet)
    if format not in SUFFIXES:
        raise unknown_name("export format", str(format), SUFFIXES)
    if what is not None and what not in WHATS:
        raise unknown_name("export target (`what`)", str(what), WHATS)
    out = Path(out)
    if out.suffix.lower() != SUFFIXES[format]:
        raise ConfigError(f"`out` of a {format} export must end in {SUFFIXES[format]}; got {out}.")
    if out.is_dir():
        raise ConfigError(f"`out` {out} is a folder. Name the file to write, e.g. {out / ('model' + SUFFIXES[format])}.")
    runtimes = check_runtimes(format, runtime)
    src = _resolve(source, weights)
    what = what or ("classifier" if src.is_classifier else "embedder")
    if what == "classifier" and not src.is_classifier:
        raise ConfigError(f"{src.name} is a backbone without a classifier head, so there is no classifier to export. "
                          f"Export its embedder (`what` embedder), or export a trained run.")
    backbone = src.module.backbone if src.is_classifier else src.module
    module = ClassifierOutputs(src.module) if what == "classifier" else backbone
    module = module.eval().cpu()
    outputs, pre = OUTPUTS[what], src.preprocessing
    size = pre.input_size
    layers = size_dependent_layers(module)
    fixed = (f"its padding depends on the input size ({', '.join(layers)}: TensorFlow \"same\" padding)" if layers else "")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.stem}.export-", dir=out.parent))
    try:
        onnx_path = tmp / "model.onnx"
        found = _trace(module, onnx_path, size, outputs, dynamic_size=not fixed, name=src.name)
        if not fixed and (fixed := _dynamic_size_fails(module, onnx_path, pre, runtimes[-1])):
            found = _trace(module, onnx_path, size, outputs, dynamic_size=False, name=src.name)
        if fixed:
            reporter.message(f"Exported for a fixed {size}x{size} input (the batch axis stays dynamic): {fixed}.")
        for w in found:
            reporter.warning(describe_warning(w))
        first = output_dim(module, size)
        meta = ExportMetadata(what=what, model=src.name, weights=src.weights, preprocessing=pre, dim=first,
                              classes=list(src.classes), outputs=list(outputs), fixed_size=fixed, source=src.record,
                              input_shape=["batch", 3, size, size] if fixed else ["batch", 3, "height", "width"])
        checked = _write(format, onnx_path, tmp, meta)
        parity = check_parity(module, checked, pre, runtimes=runtimes)
        for c in parity:
            reporter.message("parity " + describe(c))
        bad = [c for c in parity if not c["ok"]]
        if bad:
            worst = "; ".join(describe(c) for c in bad[:3])
            raise ExportError(f"The exported {format} graph of {src.name} does not reproduce PyTorch on the sample photos "
                              f"(cosine >= {MIN_COSINE} required at batch {', '.join(map(str, PARITY_BATCHES))}): {worst}. "
                              f"Nothing was written to {out}. Try the other format, or report the model.")
        meta = replace(meta, parity=parity)
        files = _move(_write(format, onnx_path, tmp, meta), out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    reporter.message(f"Wrote {out}")
    return ExportResult(path=out, format=format, metadata=meta, parity=parity, warnings=found, files=files,
                        seconds=time.perf_counter() - t0)


def _trace(module: nn.Module, path: Path, size: int, outputs: tuple[str, ...], *, dynamic_size: bool,
           name: str) -> list[dict[str, Any]]:
    """:func:`~.graph.export_onnx_file`, its failure an :class:`ExportError`."""
    try:
        return export_onnx_file(module, path, size, outputs=outputs, dynamic_size=dynamic_size)
    except Exception as exc:  # noqa: BLE001 - the exporter's own errors (unsupported operators, ...) name the cause
        lines = str(exc).strip().splitlines()
        raise ExportError(f"PyTorch's ONNX exporter cannot export {name}: {type(exc).__name__}: "
                          f"{(lines[0] if lines else '')[:300]}") from exc


def _dynamic_size_fails(module: nn.Module, path: Path, pre, runtime: str) -> str:
    """Why a graph traced with a dynamic height and width cannot keep them ("" when it reproduces PyTorch at another
    size: a Python number the trace baked in, a padding or a reshape, shows there)."""
    other = pre.input_size + OTHER_SIZE_STEP
    try:
        checks = check_parity(module, path, pre, runtimes=[runtime], batches=(3,), size=other)
    except Exception as exc:  # noqa: BLE001 - the PyTorch model itself does not run at that size (a ViT's positions)
        return f"the model does not run at other input sizes ({other}px: {type(exc).__name__})"
    if all(c["ok"] for c in checks):
        return ""
    return f"the graph traced with a dynamic size does not reproduce PyTorch at {other}px"


def output_dim(module: nn.Module, size: int) -> int:
    """The width of the module's first output."""
    import torch

    from .parity import reference

    return int(reference(module, torch.zeros(1, 3, size, size)).shape[1])


def _resolve(source: Any, weights: str | os.PathLike) -> _Source:
    """The model to export, its preprocessing, classes and provenance."""
    from ..backbones._module import FeatureBackbone
    from ..training.model import TransferModel
    from ..training.run import Run, load_run

    if isinstance(source, nn.Module):
        model = copy.deepcopy(source)  # eval() and cpu() below must not change the caller's model
        if isinstance(model, TransferModel):
            return _Source(model, True, model.backbone.name, model.backbone.weights_tag, model.preprocessing, [], {})
        if isinstance(model, FeatureBackbone):
            return _Source(model, False, model.name, model.weights_tag, model.preprocessing, [], {})
        raise ConfigError(f"Cannot export a {type(source).__name__}: pass a run folder, a backbone name, a TransferModel "
                          f"or a backbone from create_backbone().")
    if isinstance(source, Run) or Path(source).is_dir():
        if str(weights) != "default":
            raise ConfigError("`weights` applies to a backbone name only; a run already contains its weights.")
        run = source if isinstance(source, Run) else load_run(source)
        model = run.model
        return _Source(model, True, run.meta["backbone"], str(run.meta.get("weights", "unknown")), model.preprocessing,
                       run.classes, {"run": str(Path(run.path).resolve())})
    if Path(source).exists():
        raise ConfigError(f"{source} is a file. Pass a run folder or a backbone name (e.g. efficientnet_lite0).")
    from ..backbones import create_backbone

    try:
        backbone = create_backbone(str(source), weights=weights)
    except UnknownNameError as exc:
        raise UnknownNameError(f"{exc} No run folder {source} exists either.") from None
    w = str(weights) if str(weights) in ("default", "none") else str(Path(weights).resolve())
    return _Source(backbone, False, backbone.name, backbone.weights_tag, backbone.preprocessing, [],
                   {"backbone": backbone.name, "weights": w})


def _write(fmt: str, onnx_path: Path, tmp: Path, meta: ExportMetadata) -> Path:
    """The file in ``tmp`` with ``meta`` in it: the ONNX file itself, or an IR made from it."""
    if fmt == "onnx":
        write_onnx_metadata(onnx_path, meta)
        return onnx_path
    from ..inference.openvino_backend import import_openvino, openvino_core

    model = openvino_core().read_model(str(onnx_path))
    set_openvino_metadata(model, meta)
    xml = tmp / "model.xml"
    import_openvino().save_model(model, str(xml), compress_to_fp16=False)
    return xml


def _move(written: Path, out: Path) -> list[Path]:
    """Move the checked file(s) into place: an IR's ``.bin`` before its ``.xml``, so an ``.xml`` never names stale weights."""
    moved = []
    if written.suffix == ".xml":
        os.replace(written.with_suffix(".bin"), out.with_suffix(".bin"))
        moved.append(out.with_suffix(".bin"))
    os.replace(written, out)
    return [out, *moved]
