"""Commands for backbones and training: models, train, evaluate, predict, compare."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app
from ._common import console, print_json, setup_logging

_STRATEGY_HELP = "auto | feature-extraction | partial | full"


@app.command("models")
def models_cmd(
    all_: bool = typer.Option(False, "--all", help="Include tiny test backbones."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the registered backbones (any timm model is also available as timm/<name>)."""
    from ..backbones import create_backbone, get_backbone_spec, list_backbones

    rows = []
    for name in list_backbones(include_test=all_):
        spec = get_backbone_spec(name)
        module = create_backbone(name, weights="none")
        pre = spec.weights.preprocessing
        rows.append({
            "name": name, "params": sum(p.numel() for p in module.parameters()), "embedding_dim": module.num_features,
            "input_size": pre.input_size, "weights": spec.weights.tag, "source": spec.family,
            "weights_source": spec.weights.source, "offline": bool(spec.is_available_offline()),
        })
    if json_:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="Backbones (any timm model: timm/<name>)")
    for col in ("name", "params", "dim", "input", "weights", "source", "offline now"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        table.add_row(r["name"], f"{r['params'] / 1e6:.1f}M", str(r["embedding_dim"]), str(r["input_size"]), r["weights"],
                      r["source"], "yes" if r["offline"] else "no: downloads once, or --weights FILE")
    console().print(table)


@app.command("train")
def train_cmd(
    data: Path = typer.Argument(..., help="Folder with train/ and val/ class folders, or a folder of class folders."),
    model: str = typer.Option("resnet18", "--model", "-m", help="Backbone (see `transferkit models`), or timm/<name>."),
    strategy: str = typer.Option("auto", "--strategy", "-s", help=_STRATEGY_HELP),
    epochs: int = typer.Option(5, "--epochs", "-e", min=1),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default runs/train-<timestamp>)."),
    seed: int = typer.Option(0, "--seed"),
    weights: str = typer.Option("default", "--weights", help="default | none (random init) | FILE (.safetensors/.pth)."),
    head_lr: float = typer.Option(1e-3, "--head-lr"),
    backbone_lr: float = typer.Option(1e-4, "--backbone-lr"),
    unfreeze_stages: int = typer.Option(1, "--unfreeze-stages", min=1, help="Stages unfrozen by partial fine-tuning."),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw | sgd"),
    scheduler: str = typer.Option("cosine", "--scheduler", help="cosine | none"),
    patience: int = typer.Option(None, "--patience", min=1, help="Early stopping after N epochs without improvement."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps"),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Validation share when DATA has no val/ folder."),
    workers: int = typer.Option(None, "--workers", min=0, help="Image-decoding processes (default: cores - 1)."),
    no_feature_cache: bool = typer.Option(False, "--no-feature-cache", help="Run the frozen backbone every epoch."),
    no_augment: bool = typer.Option(False, "--no-augment", help="No random crop/flip while fine-tuning."),
    backend: str = typer.Option("auto", "--backend", help="Frozen-feature inference: auto | torch | openvino."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 only if cos >= 0.999 to fp32) | fp32 | bf16."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last completed epoch."),
    json_: bool = typer.Option(False, "--json", help="Print the final metrics as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or messages."),
) -> None:
    """Train a classifier by transfer learning and save it to a run directory."""
    setup_logging(quiet)
    from ..training.trainer import train

    if resume and out is None:
        raise typer.BadParameter("--resume needs --out RUN_DIR (the run to continue).")
    run = train(
        data, model=model, strategy=strategy, epochs=epochs, batch_size=batch_size, out=out, seed=seed, weights=weights,
        head_lr=head_lr, backbone_lr=backbone_lr, unfreeze_stages=unfreeze_stages, optimizer=optimizer, scheduler=scheduler,
        patience=patience, device=device, val_fraction=val_fraction, num_workers=workers,
        feature_cache=not no_feature_cache, augment=not no_augment, backend=backend, precision=precision, resume=resume,
        quiet=quiet,
    )
    m = run.metrics
    if json_:
        print_json({k: m[k] for k in ("val_accuracy", "val_loss", "best_epoch", "train_seconds", "skipped_files", "strategy")}
                   | {"run": str(run.path)})
    else:
        print(f"val_accuracy {m['val_accuracy']:.4f}  val_loss {m['val_loss']:.4f}  best_epoch {m['best_epoch']}  "
              f"strategy {run.strategy}  skipped {m['skipped_files']}  ({m['train_seconds']:.1f}s)")
        print(f"Run: {run.path}")


@app.command("evaluate")
def evaluate_cmd(
    run: Path = typer.Argument(..., help="Run directory from `transferkit train`."),
    data: Path = typer.Argument(..., help="Dataset folder."),
    split: str = typer.Option("val", "--split", help="val | test | train"),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1),
    device: str = typer.Option("auto", "--device"),
    json_: bool = typer.Option(False, "--json"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Accuracy, loss and per-class precision/recall/F1 of a trained run on a split."""
    setup_logging(quiet)
    from ..training.run import load_run

    result = load_run(run).evaluate(data, split=split, batch_size=batch_size, device=device, quiet=quiet or json_)
    if json_:
        print_json(result)
        return
    from rich.table import Table

    print(f"{split}: accuracy {result['accuracy']:.4f}  loss {result['loss']:.4f}  images {result['num_images']}  "
          f"macro F1 {result['macro_f1']:.4f}  skipped {result['skipped_files']}")
    table = Table()
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col)
    for c, r in result["per_class"].items():
        table.add_row(c, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", str(r["support"]))
    console().print(table)


@app.command("predict")
def predict_cmd(
    run: Path = typer.Argument(..., help="Run directory from `transferkit train`."),
    paths: list[Path] = typer.Argument(..., help="Image files or folders (walked recursively)."),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    device: str = typer.Option("auto", "--device"),
    json_: bool = typer.Option(False, "--json"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Top-k labels with probabilities for each image."""
    setup_logging(quiet)
    from ..training.run import load_run

    results = load_run(run).predict(paths, top_k=top_k, batch_size=batch_size, device=device)
    if json_:
        print_json(results)
        return
    for r in results:
        if "error" in r:
            print(f"{r['path']}\tERROR: {r['error']}")
        else:
            preds = "  ".join(f"{p['label']} {p['probability']:.3f}" for p in r["predictions"])
            print(f"{r['path']}\t{preds}")


@app.command("compare")
def compare_cmd(
    data: Path = typer.Argument(..., help="Dataset folder."),
    model: str = typer.Option("resnet18", "--model", "-m"),
    epochs: int = typer.Option(5, "--epochs", "-e", min=1),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    out: Path = typer.Option(None, "--out", "-o", help="Folder for the three runs and compare.json."),
    seed: int = typer.Option(0, "--seed"),
    weights: str = typer.Option("default", "--weights"),
    device: str = typer.Option("auto", "--device"),
    json_: bool = typer.Option(False, "--json"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train feature extraction, partial and full fine-tuning on the same data and budget; print one table."""
    setup_logging(quiet)
    from ..training.run import compare

    rows = compare(data, model=model, epochs=epochs, out=out, batch_size=batch_size, seed=seed, weights=weights,
                   device=device, quiet=quiet)
    if json_:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"{model}, {epochs} epochs")
    for col in ("strategy", "val accuracy", "trainable params", "seconds"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["strategy"], f"{r['val_accuracy']:.4f}", f"{r['trainable_params']:,} / {r['total_params']:,}",
                      f"{r['seconds']:.1f}")
    console().print(table)
    print(f"Wrote {Path(rows[0]['run']).parent / 'compare.json'}")
