"""Command: plot (2-D projection of an embedding store as PNG or interactive HTML)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._app import app
from ._common import console, err_console, setup_logging

COLOR_BY = ("label", "split")
OUTPUT_KINDS = {".png": "png", ".html": "html", ".htm": "html"}


def read_store(path: Path) -> dict[str, Any]:
    """Read vectors, labels, splits and image paths from an embedding store.

    The only place this command touches :mod:`transferkit.store`; returns
    ``{"vectors": (N, D) float32, "label": [...], "split": [...], "path": [...]}``.
    """
    import numpy as np

    from ..store.store import EmbeddingStore

    store = EmbeddingStore.open(path)
    if hasattr(store, "snapshot"):
        snap = store.snapshot()
        data = {key: list(snap.get(key, [])) for key in ("label", "split", "path")}
        data["vectors"] = np.asarray(snap["vectors"], dtype=np.float32)
    else:  # older stores API: plain rows
        rows = store.rows(columns=["path", "label", "split", "vector"])
        data = {key: [r.get(key) for r in rows] for key in ("label", "split", "path")}
        data["vectors"] = np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), -1)
    return data


@app.command()
def plot(
    store: Path = typer.Argument(..., help="Embedding store folder (made by `transferkit embed`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .png (static) or .html (interactive, hover shows thumbnails)."),
    method: str = typer.Option("pca", "--method", "-m", help="Projection: pca, tsne or umap (umap needs transferkit[umap])."),
    color: str = typer.Option("label", "--color", help="Colour points by: label or split."),
    perplexity: float = typer.Option(30.0, "--perplexity", help="t-SNE perplexity (clamped to (n-1)/3 for small stores)."),
    max_points: int | None = typer.Option(None, "--max-points", help="Randomly subsample to at most N points (default: all for pca, 50000 otherwise)."),
    seed: int = typer.Option(0, "--seed", help="Random seed for subsampling and t-SNE/UMAP."),
    full_tsne: bool = typer.Option(False, "--full-tsne", help="t-SNE with openTSNE's defaults (Annoy neighbours, 250 + 500 "
                                   "iterations) instead of the fast settings (exact neighbours, 250 + 100 from 5k points)."),
    thumbnails: bool = typer.Option(True, "--thumbnails/--no-thumbnails", help="HTML only: embed hover thumbnails of the images."),
    title: str | None = typer.Option(None, "--title", help="Plot title (default: method and number of points)."),
) -> None:
    """Project the embeddings in STORE to 2-D and draw them, coloured by label or split."""
    from ..errors import ConfigError, DataError, close_matches
    from ..viz import projection as viz

    setup_logging(False)
    # Everything that can be checked without reading the store is checked first.
    kind = OUTPUT_KINDS.get(out.suffix.lower())
    if kind is None:
        raise ConfigError(f"--out {out} must end in .png (static image) or .html (interactive page); got {out.suffix or 'no extension'!r}.")
    if color not in COLOR_BY:
        raise ConfigError(f"--color must be one of: {', '.join(COLOR_BY)}; got {color!r}.{close_matches(color, COLOR_BY)}")
    method = viz.check_method(method)  # unknown name, or umap not installed

    data = read_store(store)
    if len(data["vectors"]) == 0:
        raise DataError(f"Embedding store {store} is empty. Fill it with `transferkit embed DATA --store {store}`.")
    projection = viz.project(data["vectors"], method=method, seed=seed, perplexity=perplexity, max_points=max_points,
                             fast=not full_tsne)
    err = err_console()
    for notice in projection.notices:
        err.print(f"Note: {notice}", markup=False)
    if kind == "png":
        written = viz.plot_png(projection, data[color], out, title=title, color_name=color)
    else:
        written = viz.plot_html(projection, data[color], data["path"], out, thumbnails=thumbnails, title=title, color_name=color)
    console().print(f"Wrote {viz.METHOD_TITLES[method]} plot of {projection.num_points} embeddings to {written}", markup=False)
