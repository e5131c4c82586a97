"""Commands: duplicates (thin calls of the public API)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, print_json, setup_logging
from ._root import app


@app.command()
def duplicates(
    store: str = typer.Argument(..., help="Embedding store folder, or its URI (s3://BUCKET/PATH, ...)."),
    threshold: float | None = typer.Option(None, "--threshold", help="Embedding cosine at or above which two images are "
                                           "near-duplicate candidates (default 0.75, measured: see BENCHMARKS.md)."),
    accept: float | None = typer.Option(None, "--accept-threshold", help="Cosine that confirms a candidate whose image "
                                        "file cannot be read for the pixel check (default 0.95)."),
    pixel: float | None = typer.Option(None, "--pixel-threshold", help="Thumbnail correlation that confirms a candidate "
                                       "(default 0.94, measured: see BENCHMARKS.md)."),
    split: str | None = typer.Option(None, "--split", help="Only images of this split."),
    json_out: bool = typer.Option(False, "--json", help="Print the groups as JSON."),
    out: Path | None = typer.Option(None, "--out", help="Write an HTML page of the groups with thumbnails (works offline)."),
) -> None:
    """Find exact and near-duplicate images in STORE, grouped, with the copy to keep."""
    import transferkit as tk
    from transferkit.curate.duplicates import ACCEPT_THRESHOLD, DEFAULT_THRESHOLD, PIXEL_THRESHOLD
    from transferkit.curate.pages import duplicates_html, write_page

    setup_logging(False)
    report = tk.find_duplicates(store, threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
                                accept_threshold=ACCEPT_THRESHOLD if accept is None else accept,
                                pixel_threshold=PIXEL_THRESHOLD if pixel is None else pixel, split=split)
    if out is not None:
        write_page(duplicates_html(report), out)
    if json_out:
        print_json(report.to_dict())
        return
    c = console()
    x = report.extra
    c.print(f"{len(report.groups)} duplicate groups, {report.num_removable} removable of {report.num_images} images "
            f"(candidates at cosine >= {report.threshold}: {x['num_candidates']}, confirmed by pixels >= "
            f"{x['pixel_threshold']}).", markup=False)
    if x.get("pixel_unreadable"):
        c.print(f"{x['pixel_unreadable']} candidate images could not be read (moved?): their pairs were decided by "
                f"cosine >= {x['accept_threshold']} alone.", markup=False)
    for g in report.groups:
        c.print(f"{g.kind:>5}  keep {g.paths[0]}", markup=False)
        for p in g.paths[1:]:
            c.print(f"        remove {p}", markup=False)
    if out is not None:
        c.print(f"Page: {out}", markup=False)
