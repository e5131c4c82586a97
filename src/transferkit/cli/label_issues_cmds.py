"""Commands: label-issues, outliers (dataset curation from embeddings; thin calls of the public API)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, print_json, renderer, setup_logging
from ._root import app


def _l2(value: str) -> float | str:
    import transferkit as tk

    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise tk.ConfigError(f"--l2 must be 'auto' or a non-negative number like 0.01; got {value!r}.") from None


def _written(report, out: Path | None, json_out: bool) -> bool:
    """Write the page to ``out`` (when given) and print the JSON when asked; True when the JSON was printed."""
    if out is not None:
        report.write_html(out)
    if json_out:
        print_json(report.to_dict() | ({"page": str(out)} if out is not None else {}))
    return json_out


@app.command("label-issues")
def label_issues_cmd(
    data: Path = typer.Argument(..., help="Image folder (DATA/<class>/*.jpg, optionally under train/ val/) or an embedding store."),
    model: str | None = typer.Option(None, "--model", help="For an image folder: backbone name (default efficientnet_lite0) "
                                     "or a trained run folder."),
    store: Path | None = typer.Option(None, "--store", help="For an image folder: embed into this store (default: one in the cache)."),
    split: str | None = typer.Option(None, "--split", help="Only this split (train, val, test, all)."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds (every class needs at least this many images)."),
    l2: str = typer.Option("auto", "--l2", help="L2 strength of the heads, or auto (chosen by held-out log loss)."),
    rank_by: str = typer.Option("self_confidence", "--rank-by", help="self_confidence or normalized_margin."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment."),
    top: int = typer.Option(20, "--top", help="Issues printed (the JSON and the page have all of them)."),
    out: Path | None = typer.Option(None, "--out", help="Write an HTML page of the flagged images with thumbnails (works offline)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or notices."),
) -> None:
    """Find images in DATA whose given label is probably wrong (cross-validated heads + confident learning)."""
    import transferkit as tk

    setup_logging(quiet)
    if top < 0:
        raise tk.ConfigError(f"--top must be a non-negative integer; got {top}.")
    report = tk.find_label_issues(data, model=model, store=store, split=split, folds=folds, l2=_l2(l2), rank_by=rank_by,
                                  seed=seed, progress=renderer(quiet), quiet=quiet)
    if _written(report, out, json_out):
        return
    c = console()
    cv = report.cross_validation
    c.print(f"{len(report.issues)} likely label errors among {report.num_images} images ({len(report.classes)} classes), "
            f"{report.num_confident} confident; estimated {report.estimated_num_issues:.0f} wrong; {cv['folds']}-fold heads, "
            f"out-of-fold accuracy {cv['accuracy']:.3f}", markup=False)
    for i in report.issues[:top]:
        mark = "*" if i.confident else " "
        c.print(f"{i.rank:>4}{mark} {i.score:.3f}  {i.given_label} -> {i.suggested_label}  {i.path}", markup=False)
    if len(report.issues) > top:
        c.print(f"... {len(report.issues) - top} more (--top, --json or --out for all); * = confident", markup=False)
    if out is not None:
        c.print(f"Page: {out}", markup=False)


@app.command("outliers")
def outliers_cmd(
    data: Path = typer.Argument(..., help="Embedding store (or an image folder, embedded first)."),
    k: int = typer.Option(10, "--k", help="Neighbours per image for the kNN distance."),
    top: int = typer.Option(20, "--top", help="Images kept in each ranking."),
    z_threshold: float = typer.Option(3.5, "--z-threshold", help="Robust z-score from which an image counts as an outlier."),
    split: str | None = typer.Option(None, "--split", help="Only this split."),
    exact: bool | None = typer.Option(None, "--exact/--approximate", help="Exact neighbours, or an approximate index "
                                      "(default: exact up to 20,000 images)."),
    model: str | None = typer.Option(None, "--model", help="For an image folder: backbone name or trained run folder."),
    store: Path | None = typer.Option(None, "--store", help="For an image folder: embed into this store."),
    out: Path | None = typer.Option(None, "--out", help="Write an HTML page of both rankings with thumbnails (works offline)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or notices."),
) -> None:
    """Rank the images of DATA far from everything (kNN distance) and far from their own class."""
    import transferkit as tk

    setup_logging(quiet)
    report = tk.find_outliers(data, k=k, top=top, z_threshold=z_threshold, split=split, exact=exact, model=model, store=store,
                              progress=renderer(quiet), quiet=quiet)
    if _written(report, out, json_out):
        return
    c = console()
    c.print(f"Far from everything (mean distance to the {report.k} nearest; {report.num_flagged} with z >= "
            f"{report.z_threshold:g}):", markup=False)
    for o in report.outliers:
        c.print(f"{o.rank:>4}  {o.score:.3f}  z {o.z:>5.1f}  {o.label or '-'}  {o.path}", markup=False)
    c.print(f"Far from their class (distance to the class without the image; {report.num_class_flagged} with z >= "
            f"{report.z_threshold:g}):", markup=False)
    if not report.class_outliers:
        c.print("  none: no class has 3 or more labelled images", markup=False)
    for o in report.class_outliers:
        c.print(f"{o.rank:>4}  {o.distance:.3f}  z {o.z:>5.1f}  {o.label} (nearest other class {o.nearest_class})  {o.path}",
                markup=False)
    if out is not None:
        c.print(f"Page: {out}", markup=False)
