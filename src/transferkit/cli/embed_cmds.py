"""Command: embed."""

from __future__ import annotations

import typer

from ._common import console, print_json, setup_logging
from ._root import app


@app.command()
def embed(
    paths: list[str] = typer.Argument(..., metavar="[RUN] DATA", help="Optional trained run folder, then the image folder."),
    store: str = typer.Option(..., "--store", help="Embedding store folder, or a URI Lance reads (s3://BUCKET/PATH, gs://, az://); created if missing."),
    model: str | None = typer.Option(None, "--model", help="Backbone name (instead of RUN), e.g. efficientnet_lite0; or an exported model, onnx:FILE.onnx or openvino:FILE.xml."),
    weights: str = typer.Option("default", "--weights", help="With --model: default, none, or a weights FILE."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    backend: str = typer.Option("auto", "--backend", help="auto (OpenVINO on CPU for large jobs, or small ones once the model is converted) | torch | openvino."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 only if cos >= 0.999 to fp32) | fp32 | bf16."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps"),
    exact_resize: bool = typer.Option(False, "--exact-resize", help="Resize with PIL exactly like torchvision (slower); "
                                      "default: PyTorch's uint8 kernel, within 2 grey levels."),
    engine: str = typer.Option("local", "--engine", help="local (this process) | ray (Ray Data: decode tasks, a pool of "
                               "extractor actors, one commit)."),
    address: str | None = typer.Option(None, "--address", help="With --engine ray: the Ray cluster (auto, ray://HOST:10001); "
                                       "default: start a local Ray on this machine."),
    workers: int = typer.Option(2, "--workers", help="With --engine ray: embedding actors, one extractor each."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="With --engine ray: GPUs per actor (0: CPU)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or warnings."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Embed the images of DATA into STORE (incremental: only new or changed files are embedded)."""
    import transferkit as tk

    setup_logging(quiet)
    if len(paths) > 2:
        raise tk.ConfigError(f"embed takes [RUN] DATA; got {len(paths)} paths. Quote paths with spaces.")
    run, data = (paths[0], paths[1]) if len(paths) == 2 else (None, paths[0])
    if (run is None) == (model is None):
        raise tk.ConfigError("Pass exactly one of RUN (a trained run folder) or --model NAME, e.g. "
                             "`transferkit embed DATA --model efficientnet_lite0 --store STORE`.")
    if run is not None and weights != "default":
        raise tk.ConfigError("--weights applies to --model only; a RUN already contains its weights.")
    if engine not in ("local", "ray"):
        raise tk.ConfigError(f"`engine` must be local or ray; got {engine!r}.")
    if engine == "local" and (address is not None or workers != 2 or gpus_per_worker):
        raise tk.ConfigError("`address`, `workers` and `gpus_per_worker` apply to `engine` ray only.")
    if batch_size < 1:
        raise tk.ConfigError(f"--batch-size must be a positive integer; got {batch_size}.")
    opts = {"backend": backend, "precision": precision, "device": None if device == "auto" else device,
            "exact_resize": exact_resize}
    extractor = tk.Extractor.from_run(run, **opts) if run is not None else tk.Extractor.from_backbone(model, weights=weights, **opts)
    shown = not quiet and not json_out
    if engine == "ray":
        report = tk.embed_folder_ray(extractor, data, store, address=address, num_workers=workers,
                                     gpus_per_worker=gpus_per_worker, batch_size=batch_size, quiet=quiet, progress=shown)
    else:
        report = tk.embed_folder(extractor, data, store, batch_size=batch_size, quiet=quiet, progress=shown)
    if json_out:
        print_json(report.to_dict())
        return
    c = console()
    c.print(f"added {report.added}, updated {report.updated}, removed {report.removed}, "
            f"unchanged {report.unchanged}, skipped {len(report.skipped)}")
    info = report.inference or extractor.inference_info  # on Ray, the workers' extractors ran
    c.print(f"{report.num_rows} embeddings in {report.store} ({report.images_per_second:.1f} images/s, "
            f"{info.get('backend')} {info.get('precision')})")
