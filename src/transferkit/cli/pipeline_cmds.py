"""The one-command pipeline and the offline demo."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from ._common import print_json, renderer, setup_logging
from ._root import app


def _summary(result) -> dict:
    m = result.run.metrics
    return {
        "run": str(result.run.path), "report": str(result.report_path), "store": result.store.uri,
        "strategy": result.run.strategy, "val_accuracy": m.get("val_accuracy"),
        "p_at_1": result.retrieval.get("p_at_1"), "p_at_5": result.retrieval.get("p_at_5"),
        "map_at_10": result.retrieval.get("map_at_10"), "index_recall_at_10": result.index.get("recall_at_10"),
        "plots": {k: str(v) for k, v in result.plots.items()}, "timings": result.timings,
    }


def _print_summary(result) -> None:
    s = _summary(result)
    print(f"strategy {s['strategy']}  val_accuracy {s['val_accuracy']:.4f}  retrieval p@1 {s['p_at_1']:.3f}  "
          f"p@5 {s['p_at_5']:.3f}  mAP@10 {s['map_at_10']:.3f}  ANN recall@10 {s['index_recall_at_10']:.3f}")
    print(f"Run:    {s['run']}")
    print(f"Store:  {s['store']}")
    for name, path in s["plots"].items():
        print(f"Plot:   {path}  ({name})")
    print(f"Report: {s['report']}")
    print(f"Explore: transferkit serve {shlex.quote(s['store'])} --run {shlex.quote(s['run'])}")


@app.command("pipeline")
def pipeline_cmd(
    data: Path = typer.Argument(..., help="Folder with train/ and val/ class folders, or a folder of class folders."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default runs/pipeline-<timestamp>)."),
    model: str = typer.Option("resnet18", "--model", "-m"),
    strategy: str = typer.Option("auto", "--strategy", "-s", help="auto | feature-extraction | partial | full"),
    epochs: int = typer.Option(5, "--epochs", "-e", min=1),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    seed: int = typer.Option(0, "--seed"),
    weights: str = typer.Option("default", "--weights", help="default | none | FILE"),
    device: str = typer.Option("auto", "--device"),
    no_tsne: bool = typer.Option(False, "--no-tsne", help="Only the PCA map."),
    tracker: str = typer.Option("none", "--tracker", help="none | tensorboard | mlflow: log each run's parameters, epochs, confusion matrix and model."),
    tracker_uri: str = typer.Option(None, "--tracker-uri", help="mlflow: tracking URI (default sqlite:///<out's parent>/mlruns.db); tensorboard: a logs folder."),
    experiment: str = typer.Option("transferkit", "--experiment", help="The tracker's experiment name."),
    json_: bool = typer.Option(False, "--json"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Run all seven steps (train, extractor, embed, plot, index, search) and write report.html."""
    import transferkit as tk

    setup_logging(quiet)
    result = tk.pipeline(data, out=out, model=model, strategy=strategy, epochs=epochs, batch_size=batch_size, seed=seed,
                         weights=weights, device=device, tsne=not no_tsne, progress=renderer(quiet), quiet=quiet,
                         tracker=tracker, tracker_uri=tracker_uri, experiment=experiment)
    print_json(_summary(result)) if json_ else _print_summary(result)


def sample_data_path() -> Path:
    """The bundled demo sample (40 ants + 40 bees per split, from the hymenoptera set)."""
    from importlib.resources import files

    return Path(str(files("transferkit") / "sample_data" / "hymenoptera_mini"))


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory."),
    epochs: int = typer.Option(3, "--epochs", "-e", min=1),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """The pipeline on the bundled ants/bees sample with efficientnet_lite0 (works offline)."""
    import shutil

    import transferkit as tk

    setup_logging(quiet)
    if (out / "report.html").exists():
        shutil.rmtree(out)  # the demo always starts fresh; it only ever writes inside --out
    result = tk.pipeline(sample_data_path(), out=out, model="efficientnet_lite0", strategy="auto", epochs=epochs,
                         progress=renderer(quiet), quiet=quiet)
    _print_summary(result)
