"""Command: plot (2-D projection of an embedding store as PNG or interactive HTML)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, renderer, setup_logging
from ._root import app

COLOR_BY = ("label", "split")
OUTPUT_KINDS = {".png": "png", ".html": "html", ".htm": "html"}


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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or notices."),
) -> None:
    """Project the embeddings in STORE to 2-D and draw them, coloured by label or split."""
    import transferkit as tk

    setup_logging(quiet)
    # Everything that can be checked without reading the store is checked first.
    kind = OUTPUT_KINDS.get(out.suffix.lower())
    if kind is None:
        raise tk.ConfigError(f"--out {out} must end in .png (static image) or .html (interactive page); "
                             f"got {out.suffix or 'no extension'!r}.")
    if color not in COLOR_BY:
        import difflib

        close = difflib.get_close_matches(color, COLOR_BY, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise tk.ConfigError(f"--color must be one of: {', '.join(COLOR_BY)}; got {color!r}.{hint}")
    method = tk.check_projection_method(method)  # unknown name, or umap not installed
    snap = tk.EmbeddingStore.open(store).snapshot()
    if len(snap["vectors"]) == 0:
        raise tk.DataError(f"Embedding store {store} is empty. Fill it with: transferkit embed DATA --store {store}")
    progress = renderer(quiet)
    projection = tk.project(snap["vectors"], method=method, seed=seed, perplexity=perplexity, max_points=max_points,
                            fast=not full_tsne, progress=progress, quiet=quiet)
    labels = list(snap[color])
    if kind == "png":
        written = tk.plot_png(projection, labels, out, title=title, color_name=color)
    else:
        written = tk.plot_html(projection, labels, list(snap["path"]), out, thumbnails=thumbnails, title=title,
                               color_name=color, progress=progress, quiet=quiet)
    console().print(f"Wrote {projection.method_title} plot of {projection.num_points} embeddings to {written}", markup=False)
