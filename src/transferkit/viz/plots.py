"""Draw a :class:`~.projection.Projection` as a PNG scatter plot or a self-contained interactive HTML page."""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._io import atomic_path, write_text_atomic
from ..errors import ConfigError, DataError
from ..events import Callback, Reporter, make_reporter
from .projection import Projection
from .thumbnails import make_thumbnail

# Thumbnails cost ~2-3 KB each inline; above this the page becomes too heavy to open.
DEFAULT_MAX_THUMBNAILS = 5_000


# --------------------------------------------------------------------------- plotting helpers


def _per_point(values, projection: Projection, what: str) -> list | None:
    """Align per-row ``values`` (for all N input rows, or already for the used rows) with ``coords``."""
    if values is None:
        return None
    values = list(values)
    if len(values) == projection.num_total:
        return [values[i] for i in projection.indices]
    if len(values) == projection.num_points:
        return values
    raise DataError(
        f"Got {len(values)} {what} for a projection of {projection.num_total} embeddings; pass one per embedding."
    )


def _groups(labels: list | None, n: int) -> tuple[list[str], np.ndarray]:
    """Return the sorted distinct label names and, per point, the index of its name."""
    if labels is None:
        return ["all"], np.zeros(n, dtype=np.int64)
    names = ["(none)" if v is None else str(v) for v in labels]
    classes = sorted(set(names), key=_natural_key)
    lookup = {c: i for i, c in enumerate(classes)}
    return classes, np.fromiter((lookup[v] for v in names), dtype=np.int64, count=n)


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _colors(k: int) -> list[str]:
    """``k`` distinguishable hex colours: tab10/tab20, then evenly spaced hues."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if k <= 10:
        cmap = colormaps["tab10"]
        return [to_hex(cmap(i)) for i in range(k)]
    if k <= 20:
        cmap = colormaps["tab20"]
        return [to_hex(cmap(i)) for i in range(k)]
    cmap = colormaps["hsv"]
    return [to_hex(cmap(i / k)) for i in range(k)]


def _axis_titles(projection: Projection) -> tuple[str, str]:
    name = projection.method_title
    if projection.method == "pca" and projection.explained_variance is not None:
        v1, v2 = projection.explained_variance
        return f"PC1 ({v1:.1%} of variance)", f"PC2 ({v2:.1%} of variance)"
    return f"{name} 1", f"{name} 2"


def _default_title(projection: Projection) -> str:
    name = projection.method_title
    if projection.is_subsampled:
        what = f"{projection.num_points:,} of {projection.num_total:,} embeddings (random subsample)"
    else:
        what = f"{projection.num_points:,} embeddings"
    title = f"{name} of {what}"
    if projection.method == "pca" and projection.explained_variance is not None:
        title += f" - PC1+PC2 explain {sum(projection.explained_variance):.1%} of variance"
    elif projection.method == "tsne" and projection.perplexity is not None:
        title += f" - perplexity {projection.perplexity:.3g}"
    return title


# --------------------------------------------------------------------------- PNG


def plot_png(
    projection: Projection,
    labels: Sequence | None,
    path: str | os.PathLike,
    *,
    title: str | None = None,
    color_name: str = "label",
    width: int = 900,
    height: int = 700,
    dpi: int = 100,
) -> Path:
    """Draw a projection as a scatter plot coloured by ``labels`` and save it as a PNG.

    Args:
        projection: from :func:`project`.
        labels: one label per input embedding (or per projected point); ``None`` for one colour.
        path: output file; written atomically, parent folders created.
        title: plot title; default names the method and number of points (and PCA's
            explained variance).
        color_name: legend title (what ``labels`` are, e.g. ``"label"`` or ``"split"``).
        width, height, dpi: image size in pixels is exactly ``width x height``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: ``labels`` has the wrong length.
    """
    # The object-oriented API with an explicit Agg canvas: no pyplot global state, no GUI
    # backend, safe in threads and headless servers whatever backend the user configured.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    coords = projection.coords
    n = projection.num_points
    classes, codes = _groups(_per_point(labels, projection, "labels"), n)
    colors = _colors(len(classes))

    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    size = float(np.clip(4000.0 / max(n, 1), 2.0, 40.0))
    for k, name in enumerate(classes):
        mask = codes == k
        ax.scatter(coords[mask, 0], coords[mask, 1], s=size, c=colors[k], alpha=0.8, linewidths=0, label=f"{name} ({int(mask.sum())})")
    xlabel, ylabel = _axis_titles(projection)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else _default_title(projection), fontsize=11)
    ax.grid(True, alpha=0.25)
    if projection.method != "pca":
        ax.set_xticklabels([])  # t-SNE / UMAP axes have no units worth reading
        ax.set_yticklabels([])
    if len(classes) > 1 or labels is not None:
        handles, texts = ax.get_legend_handles_labels()
        max_entries = 30
        if len(handles) > max_entries:
            handles, texts = handles[:max_entries], texts[:max_entries]
            texts[-1] = f"... {len(classes) - max_entries + 1} more"
        ax.legend(handles, texts, title=color_name, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title_fontsize=9, markerscale=max(1.0, 30 / size) ** 0.5, frameon=False)
    fig.subplots_adjust(left=0.08, right=0.78, top=0.92, bottom=0.09)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


# --------------------------------------------------------------------------- HTML


_HOVER_JS = """
(function () {
  var gd = document.getElementById('{plot_id}');
  var thumbs = JSON.parse(document.getElementById('tk-thumbs').textContent);
  var box = document.getElementById('tk-hover');
  var img = document.getElementById('tk-hover-img');
  gd.on('plotly_hover', function (ev) {
    var p = ev.points[0];
    var t = thumbs[p.customdata];
    if (!t) { box.style.display = 'none'; return; }
    img.src = t;
    var e = ev.event || {};
    box.style.left = ((e.clientX || 0) + 16) + 'px';
    box.style.top = ((e.clientY || 0) + 16) + 'px';
    box.style.display = 'block';
  });
  gd.on('plotly_unhover', function () { box.style.display = 'none'; });
})();
"""

_HOVER_HTML = (
    '<div id="tk-hover" style="display:none;position:fixed;z-index:1000;pointer-events:none;'
    'background:#fff;border:1px solid #999;border-radius:4px;padding:3px;box-shadow:0 2px 6px rgba(0,0,0,.3)">'
    '<img id="tk-hover-img" alt="thumbnail" style="display:block;max-width:128px;max-height:128px"></div>'
)


def plot_html(
    projection: Projection,
    labels: Sequence | None,
    paths: Sequence | None,
    path: str | os.PathLike,
    *,
    thumbnails: bool = True,
    title: str | None = None,
    color_name: str = "label",
    thumbnail_size: int = 64,
    max_thumbnails: int = DEFAULT_MAX_THUMBNAILS,
    progress: Callback | Reporter | None = None,
    quiet: bool = False,
) -> Path:
    """Write a self-contained interactive scatter plot (plotly.js inlined, works offline).

    Hovering a point shows its image thumbnail, path and label. Thumbnails are small
    inline JPEGs; images that cannot be read simply get none. Notices (thumbnails
    skipped, unreadable images) are reported as warnings and shown on the page.

    Args:
        projection: from :func:`project`.
        labels: one label per input embedding (or per projected point); ``None`` for one colour.
        paths: one image path per input embedding (or per projected point); ``None`` for none.
        path: output ``.html`` file; written atomically. Image files are only ever read.
        thumbnails: embed hover thumbnails.
        title: page and plot title; default names the method and number of points.
        color_name: legend title.
        thumbnail_size: longest side of a thumbnail in pixels.
        max_thumbnails: above this many points no thumbnails are embedded (the page would be
            too heavy); a notice says so.
        progress: receives the events (thumbnails as a ``"thumbnails"`` task, notices as warnings).
        quiet: report nothing (when ``progress`` is not given).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: ``labels`` or ``paths`` has the wrong length.
        ConfigError: ``path`` is one of the image paths.
    """
    import plotly.graph_objects as go
    import plotly.io as pio

    path = Path(path)
    n = projection.num_points
    point_labels = _per_point(labels, projection, "labels")
    point_paths = _per_point(paths, projection, "paths")
    classes, codes = _groups(point_labels, n)
    colors = _colors(len(classes))
    notices = list(projection.notices)
    reporter = make_reporter(progress, quiet=quiet)

    if point_paths is not None:
        out = path.resolve()
        if any(Path(p).resolve() == out for p in point_paths if p):
            raise ConfigError(f"Output {path} is one of the plotted images; choose another output file.")

    thumbs: list[str | None] = [None] * n
    if thumbnails and point_paths is not None:
        if n > max_thumbnails:
            notices.append(
                f"No hover thumbnails: {n:,} points is over the limit of {max_thumbnails:,}. "
                f"Hint: project at most {max_thumbnails:,} points (`max_points`) for thumbnails."
            )
        else:
            with reporter.task("thumbnails", total=n, description="Thumbnails") as task:
                for i, p in enumerate(point_paths):
                    thumbs[i] = make_thumbnail(p, size=thumbnail_size) if p else None
                    if (i + 1) % 64 == 0 or i + 1 == n:  # an event per 64 images, not per image
                        task.advance(i + 1 - task.completed)
            missing = sum(t is None for t in thumbs)
            if missing:
                notices.append(f"{missing} of {n} images could not be read; those points have no thumbnail.")
    for notice in notices[len(projection.notices):]:
        reporter.warning(notice)

    fig = go.Figure()
    coords = projection.coords.astype(np.float64)
    text_paths = [html.escape(str(p)) for p in point_paths] if point_paths is not None else None
    for k, name in enumerate(classes):
        idx = np.flatnonzero(codes == k)
        hover = [
            (f"{html.escape(color_name)}: {html.escape(name)}" + (f"<br>{text_paths[i]}" if text_paths is not None else ""))
            for i in idx
        ]
        fig.add_trace(
            go.Scattergl(
                x=coords[idx, 0],
                y=coords[idx, 1],
                mode="markers",
                name=f"{html.escape(name)} ({len(idx)})",  # plotly renders HTML tags in legend text
                marker={"size": 6 if n <= 5000 else 4, "color": colors[k], "opacity": 0.8},
                customdata=idx.tolist(),  # position in ``thumbs``
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    xlabel, ylabel = _axis_titles(projection)
    page_title = title if title is not None else _default_title(projection)
    fig.update_layout(
        title={"text": html.escape(page_title)},
        xaxis_title=xlabel,
        yaxis_title=ylabel,
        legend_title_text=html.escape(color_name),
        template="plotly_white",
        hovermode="closest",
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    plot_id = "tk-plot"
    body = pio.to_html(
        fig,
        include_plotlyjs=True,  # inline, no CDN: the file works offline and stays valid
        full_html=False,
        div_id=plot_id,
        post_script=_HOVER_JS,
        config={"displaylogo": False, "responsive": True},
        default_height="85vh",
    )
    thumbs_json = json.dumps(thumbs).replace("</", "<\\/")
    notice_html = "".join(f"<li>{html.escape(s)}</li>" for s in notices)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(page_title)}</title>\n"
        "<style>body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 16px;color:#222}"
        "ul.tk-notices{color:#7a5b00;font-size:13px;margin:6px 0}</style>\n</head>\n<body>\n"
        + (f'<ul class="tk-notices">{notice_html}</ul>\n' if notice_html else "")
        + f'<script type="application/json" id="tk-thumbs">{thumbs_json}</script>\n'
        + _HOVER_HTML
        + "\n"
        + body
        + "\n</body>\n</html>\n"
    )
    write_text_atomic(path, page)
    return path
