"""Commands for backbones and training: models, train, evaluate, predict, compare."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ._common import console, print_json, renderer, setup_logging
from ._root import app


@app.command("models")
def models_cmd(
    all_: bool = typer.Option(False, "--all", help="Include tiny test backbones."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the registered backbones (any timm model is also available as timm/<name>)."""
    import transferkit as tk

    rows = []
    for name in tk.list_backbones(include_test=all_):
        spec = tk.get_backbone_spec(name)
        module = tk.create_backbone(name, weights="none")
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


#: Extra names of some training options on the command line (short flags, the historical ``--workers``).
#: Options whose command-line type differs from the field's (``--input-size auto`` or a number).
_CLI_TYPES = {"input_size": str}
_ALIASES = {"model": ("-m",), "strategy": ("-s",), "epochs": ("-e",), "batch_size": ("-b",), "num_workers": ("--workers",)}


def _train_cmd(data: Path, out: Path | None, resume: bool, json_: bool, quiet: bool, nproc: int, ctx: typer.Context,
               **options) -> None:
    """Train a classifier by transfer learning and save it to a run directory."""
    import transferkit as tk
    from transferkit.config import ProcessLayout

    layout = ProcessLayout.from_env()
    quiet = quiet or not layout.is_main  # under torchrun, rank 0 alone reports
    setup_logging(quiet)
    if resume and out is None:
        raise typer.BadParameter("--resume needs --out RUN_DIR (the run to continue).")
    if layout.world_size > 1 and nproc not in (1, layout.world_size):
        raise typer.BadParameter(f"--nproc {nproc} under a launcher that started {layout.world_size} processes; drop it.")
    if nproc > 1 and layout.world_size == 1:  # run this same command in nproc processes
        tk.launch_torchrun((ctx.obj or {}).get("argv") or sys.argv[1:], nproc, run_dir=out)
        return
    run = tk.train(data, out=out, resume=resume, progress=renderer(quiet), quiet=quiet, **options)
    if not layout.is_main:
        return
    m = run.metrics
    if json_:
        print_json({k: m[k] for k in ("val_accuracy", "val_loss", "best_epoch", "train_seconds", "skipped_files", "strategy")}
                   | {"run": str(run.path)})
    else:
        print(f"val_accuracy {m['val_accuracy']:.4f}  val_loss {m['val_loss']:.4f}  best_epoch {m['best_epoch']}  "
              f"strategy {run.strategy}  skipped {m['skipped_files']}  ({m['train_seconds']:.1f}s)")
        print(f"Run: {run.path}")


def _register_train() -> None:
    """The ``train`` command, its options derived from :class:`transferkit.TrainConfig` (one definition of each
    option, its default and its help)."""
    import dataclasses
    import inspect
    import typing

    import transferkit as tk

    kw = inspect.Parameter.KEYWORD_ONLY
    hints = typing.get_type_hints(tk.TrainConfig)
    params = []
    for f in dataclasses.fields(tk.TrainConfig):
        doc = f.metadata.get("doc", "").replace("`", "")
        if f.name == "data":
            params.append(inspect.Parameter("data", kw, annotation=Path, default=typer.Argument(..., help=doc)))
            params.append(inspect.Parameter("out", kw, annotation=Path | None, default=typer.Option(
                None, "--out", "-o", help="Run directory (default runs/train-<timestamp>).")))
            continue
        flag = "--" + f.name.replace("_", "-")
        names = (f"{flag}/--no-{flag[2:]}",) if hints[f.name] is bool else (flag, *_ALIASES.get(f.name, ()))
        params.append(inspect.Parameter(f.name, kw, annotation=_CLI_TYPES.get(f.name, hints[f.name]),
                                      default=typer.Option(f.default, *names, help=doc)))
    params += [
        inspect.Parameter("resume", kw, annotation=bool, default=typer.Option(
            False, "--resume", help="Continue the run in --out from its last completed epoch.")),
        inspect.Parameter("json_", kw, annotation=bool, default=typer.Option(False, "--json", help="Print the final metrics as JSON.")),
        inspect.Parameter("quiet", kw, annotation=bool, default=typer.Option(False, "--quiet", "-q", help="No progress bars or messages.")),
        inspect.Parameter("nproc", kw, annotation=int, default=typer.Option(
            1, "--nproc", min=1, help="Train in N processes on this machine (torchrun, DDP): one per GPU, or gloo on the CPU.")),
        inspect.Parameter("ctx", kw, annotation=typer.Context),
    ]

    def train_cmd(**kwargs) -> None:
        _train_cmd(**kwargs)

    train_cmd.__doc__ = _train_cmd.__doc__
    train_cmd.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    app.command("train")(train_cmd)


_register_train()


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
    import transferkit as tk

    setup_logging(quiet)
    result = tk.load_run(run).evaluate(data, split=split, batch_size=batch_size, device=device,
                                       progress=renderer(quiet or json_), quiet=quiet or json_)
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
    import transferkit as tk

    setup_logging(quiet)
    results = tk.load_run(run).predict(paths, top_k=top_k, batch_size=batch_size, device=device)
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
    tracker: str = typer.Option("none", "--tracker", help="none | tensorboard | mlflow: log each run's parameters, epochs, confusion matrix and model."),
    tracker_uri: str = typer.Option(None, "--tracker-uri", help="mlflow: tracking URI (default sqlite:///<out's parent>/mlruns.db); tensorboard: a logs folder."),
    experiment: str = typer.Option("transferkit", "--experiment", help="The tracker's experiment name."),
    json_: bool = typer.Option(False, "--json"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train feature extraction, partial and full fine-tuning on the same data and budget; print one table."""
    import transferkit as tk

    setup_logging(quiet)
    rows = tk.compare(data, model=model, epochs=epochs, out=out, batch_size=batch_size, seed=seed, weights=weights,
                      device=device, progress=renderer(quiet), quiet=quiet,
                      tracker=tracker, tracker_uri=tracker_uri, experiment=experiment)
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


@app.command("lr-find")
def lr_find_cmd(
    data: Path = typer.Argument(..., help="Dataset folder (as for train)."),
    model: str = typer.Option("resnet18", "--model", "-m"),
    strategy: str = typer.Option("partial", "--strategy", "-s", help="The strategy to find a learning rate for."),
    out: Path = typer.Option(Path("lr_find"), "--out", "-o", help="Folder for lr_find.png and lr_find.json."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    weights: str = typer.Option("default", "--weights"),
    head_init: str = typer.Option("fit", "--head-init", help="fit (sweep from the fitted head, as fine-tuning starts) | random."),
    start_lr: float = typer.Option(1e-7, "--start-lr"),
    end_lr: float = typer.Option(10.0, "--end-lr"),
    num_steps: int = typer.Option(100, "--num-steps"),
    num_workers: int = typer.Option(None, "--num-workers", "--workers"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    json_: bool = typer.Option(False, "--json", help="Print the suggestions as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Sweep the learning rate from 1e-7 to 10 (fastai's lr_find); plot loss vs LR and suggest one ('valley')."""
    import transferkit as tk

    setup_logging(quiet)
    r = tk.lr_find(data, out=out, model=model, strategy=strategy, batch_size=batch_size, weights=weights, head_init=head_init,
                   start_lr=start_lr, end_lr=end_lr, num_steps=num_steps, num_workers=num_workers, seed=seed, device=device,
                   progress=renderer(quiet), quiet=quiet)
    if json_:
        print_json(r.summary())
        return
    print(f"valley {r.valley:.2e}  steepest {r.steepest:.2e}  suggestion {r.suggestion:.2e}  ({len(r.lrs)} steps"
          f"{', loss diverged' if r.diverged else ''})")
    print(f"Wrote {out / 'lr_find.png'} and {out / 'lr_find.json'}")
