"""Command: export (a run or a backbone as ONNX / OpenVINO IR, checked against PyTorch)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, print_json, renderer, setup_logging
from ._root import app


@app.command("export")
def export_cmd(
    source: str = typer.Argument(..., metavar="RUN_OR_MODEL", help="A trained run folder, or a backbone name (e.g. efficientnet_lite0)."),
    out: Path = typer.Option(..., "--out", "-o", help="File to write: .onnx; for OpenVINO the .xml (its .bin is written beside it)."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx | openvino"),
    what: str | None = typer.Option(None, "--what", help="embedder | classifier (default: a run's classifier, a backbone's embedder)."),
    weights: str = typer.Option("default", "--weights", help="With a backbone name: default, none, or a weights FILE."),
    runtime: str = typer.Option("auto", "--runtime", help="What runs the parity check: auto (ONNX Runtime when installed, "
                                "and OpenVINO) | onnxruntime | openvino."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines or warnings."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Export RUN_OR_MODEL to ONNX or OpenVINO IR (dynamic batch, preprocessing and class names in its metadata),
    checked against PyTorch on sample photos at batch 1, 3 and 8 (cosine >= 0.9999 required)."""
    import transferkit as tk

    setup_logging(quiet)
    result = tk.export_model(source, out=out, format=format, what=what, weights=weights, runtime=runtime, quiet=quiet,
                             progress=renderer(quiet))
    if json_out:
        print_json(result.to_dict())
        return
    meta = result.metadata
    size = sum(f.stat().st_size for f in result.files) / 1e6
    shape = ", ".join(str(d) for d in meta.input_shape)
    outputs = ", ".join(f"{name} [batch, {meta.dim}]" for name in meta.outputs)
    c = console()
    c.print(f"{result.path}: {size:.1f} MB, {result.format} {meta.what} of {meta.model}; input images [{shape}], "
            f"output {outputs}", markup=False)
    runtimes = ", ".join(dict.fromkeys(p["runtime"] for p in result.parity))
    c.print(f"Parity vs PyTorch ({runtimes}; batches 1, 3, 8 of sample photos): max |diff| {result.max_abs_diff:.2e}, "
            f"min cosine {result.min_cosine:.6f} (>= 0.9999 required)", markup=False)
    if meta.classes:
        c.print(f"Classes: {', '.join(meta.classes)}", markup=False)
