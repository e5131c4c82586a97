"""Project embeddings to 2-D (PCA, t-SNE, UMAP) and draw them as a PNG or an interactive HTML page.

Everything here works on plain numpy arrays, so the same functions serve the CLI, the run
report and notebooks. t-SNE uses openTSNE (Barnes-Hut below 10k points, FFT-accelerated
interpolation above). ``benchmarks/bench_tsne.py`` compares it with scikit-learn's default
t-SNE: on 10k x 512 clustered vectors on 2 CPU cores it was 2.7x faster (58 s vs 153 s) with
trustworthiness within 0.006 (FFT interpolation scales as N, Barnes-Hut as N log N).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_path, write_text_atomic
from ..errors import ConfigError, DataError, MissingDependencyError, unknown_name

log = logging.getLogger("transferkit.viz")

METHODS = ("pca", "tsne", "umap")
METHOD_TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
# Fewer points than this and a neighbourhood embedding has nothing to preserve.
MIN_POINTS = {"pca": 2, "tsne": 5, "umap": 5}
# Above this many points t-SNE / UMAP subsample (unless ``max_points`` says otherwise):
# beyond it the picture stops changing while the run time keeps growing.
DEFAULT_MAX_POINTS = 50_000
# Thumbnails cost ~2-3 KB each inline; above this the page becomes too heavy to open.
DEFAULT_MAX_THUMBNAILS = 5_000
UMAP_HINT = "pip install 'transferkit[umap]'"


@dataclass(frozen=True)
class Projection:
    """A 2-D projection of (possibly a subsample of) an embedding matrix.

    Attributes:
        coords: ``(n, 2)`` float32 coordinates, one row per used embedding.
        method: ``"pca"``, ``"tsne"`` or ``"umap"``.
        indices: ``(n,)`` int64 rows of the input that ``coords`` correspond to (sorted).
        num_total: number of rows in the input before any subsampling.
        explained_variance: PCA only: ratio of variance explained by PC1 and PC2.
        perplexity: t-SNE only: the perplexity actually used (after clamping).
        notices: human-readable notes about what was changed (clamped perplexity, subsampling).
    """

    coords: np.ndarray
    method: str
    indices: np.ndarray
    num_total: int
    explained_variance: tuple[float, float] | None = None
    perplexity: float | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def num_points(self) -> int:
        return int(self.coords.shape[0])

    @property
    def is_subsampled(self) -> bool:
        return self.num_points < self.num_total


def check_method(method: str) -> str:
    """Validate a projection method name and that its dependency is installed.

    Cheap, so callers (the CLI) can fail before loading any data.

    Returns:
        The method name, lower-cased.

    Raises:
        UnknownNameError: ``method`` is not one of :data:`METHODS`.
        MissingDependencyError: ``method`` is ``"umap"`` and umap-learn is not installed.
    """
    name = str(method).lower().replace("-", "")
    if name not in METHODS:
        raise unknown_name("projection method", str(method), METHODS)
    if name == "umap":
        _import_umap()
    return name


def _import_umap():
    try:
        import umap  # noqa: F401  (optional extra)
    except ImportError as exc:
        raise MissingDependencyError(f"UMAP needs the optional package umap-learn, which is not installed. Run: {UMAP_HINT}") from exc
    return umap


def project(
    embeddings,
    *,
    method: str = "pca",
    seed: int = 0,
    perplexity: float = 30.0,
    max_points: int | None = None,
    n_jobs: int = -1,
    fast: bool = True,
) -> Projection:
    """Project ``(N, D)`` embeddings to 2-D.

    Args:
        embeddings: array-like of shape ``(N, D)`` with finite values.
        method: ``"pca"`` (linear, deterministic, fast), ``"tsne"`` (openTSNE) or ``"umap"``
            (needs ``transferkit[umap]``).
        seed: random seed for subsampling and the t-SNE / UMAP optimisation.
        perplexity: t-SNE perplexity; clamped to ``(n - 1) / 3`` with a notice when too large
            for the number of points.
        max_points: subsample (uniformly, with ``seed``) to at most this many rows.
            ``None`` means no limit for PCA and :data:`DEFAULT_MAX_POINTS` for t-SNE / UMAP.
        n_jobs: threads for t-SNE / UMAP (-1 = all cores; t-SNE uses one below 2,000 points).
        fast: t-SNE only: exact neighbours (up to 50k points) and, from 5,000 points, FFT
            gradients with 250 + 100 iterations (6.6x scikit-learn's TSNE on 10k x 512 at equal
            trustworthiness). ``False``: openTSNE's defaults (Annoy neighbours, 250 + 500).

    Returns:
        A :class:`Projection`.

    Raises:
        UnknownNameError: unknown ``method``.
        MissingDependencyError: ``method="umap"`` without umap-learn installed (raised first).
        ConfigError: bad ``perplexity``, ``max_points`` or ``seed``.
        DataError: not a 2-D array, too few rows, fewer than 2 columns, or non-finite values.
    """
    method = check_method(method)  # before any work: a missing extra fails instantly
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"`seed` of project must be a non-negative int; got {seed!r}.")
    try:
        perplexity = float(perplexity)
    except (TypeError, ValueError):
        raise ConfigError(f"`perplexity` of project must be a positive float; got {perplexity!r}.") from None
    if not np.isfinite(perplexity) or perplexity <= 0:
        raise ConfigError(f"`perplexity` of project must be a positive float; got {perplexity!r}.")
    min_points = MIN_POINTS[method]
    if max_points is not None and (
        isinstance(max_points, bool) or not isinstance(max_points, int | np.integer) or max_points < min_points
    ):
        raise ConfigError(f"`max_points` of project must be an int >= {min_points} or None; got {max_points!r}.")

    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise DataError(f"Embeddings must be a 2-D array (n_samples, n_features); got shape {x.shape}.")
    num_total, dim = x.shape
    title = METHOD_TITLES[method]
    if num_total < min_points:
        raise DataError(
            f"{title} needs at least {min_points} embeddings; got {num_total}. Embed more images or use --method pca."
            if method != "pca"
            else f"PCA needs at least {min_points} embeddings; got {num_total}."
        )
    if dim < 2:
        raise DataError(f"Embeddings need at least 2 dimensions to project to 2-D; got {dim}.")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"Embeddings must be numeric; got dtype {x.dtype}.")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise DataError(f"{bad} embedding(s) contain NaN or infinite values. Re-embed those images or drop them.")

    notices: list[str] = []
    limit = max_points if max_points is not None else (None if method == "pca" else DEFAULT_MAX_POINTS)
    indices = np.arange(num_total, dtype=np.int64)
    if limit is not None and num_total > limit:
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(num_total, size=int(limit), replace=False)).astype(np.int64)
        x = x[indices]
        notices.append(
            f"Projected a random subsample of {limit:,} of {num_total:,} embeddings (seed {seed}). Hint: raise --max-points to use more."
        )
    n = x.shape[0]

    explained: tuple[float, float] | None = None
    used_perplexity: float | None = None
    if method == "pca":
        coords, explained = _pca(x, seed)
    elif method == "tsne":
        used_perplexity = perplexity
        max_perplexity = (n - 1) / 3.0  # openTSNE needs 3 * perplexity neighbours per point
        if perplexity > max_perplexity:
            used_perplexity = max_perplexity
            notices.append(
                f"Perplexity {perplexity:g} is too large for {n} points (must be <= (n - 1) / 3 = {max_perplexity:.2f}); "
                f"using {max_perplexity:.2f}."
            )
        coords = _tsne(x, perplexity=used_perplexity, seed=int(seed), n_jobs=n_jobs, fast=bool(fast))
    else:
        coords = _umap(x, seed=int(seed), n_jobs=n_jobs)
    for notice in notices:
        log.info(notice)
    return Projection(
        coords=np.ascontiguousarray(coords, dtype=np.float32),
        method=method,
        indices=indices,
        num_total=int(num_total),
        explained_variance=explained,
        perplexity=used_perplexity,
        notices=notices,
    )


def _pca(x: np.ndarray, seed: int) -> tuple[np.ndarray, tuple[float, float]]:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=seed)
    coords = pca.fit_transform(x)
    ratio = np.nan_to_num(pca.explained_variance_ratio_)  # all-identical rows give 0/0
    return coords, (float(ratio[0]), float(ratio[1]))


#: From this many points on, t-SNE uses the fast settings (see ``_tsne``).
FAST_TSNE_MIN_POINTS = 5_000
#: Up to this many points the t-SNE neighbours are exact (blocked matrix products); above,
#: openTSNE's approximate Annoy index.
EXACT_KNN_MAX_POINTS = 50_000
#: Optimisation iterations after the 250 of early exaggeration, from FAST_TSNE_MIN_POINTS on
#: (openTSNE's default is 500). On 10k x 512 clustered embeddings trustworthiness stayed
#: within run-to-run noise (+-0.005) of scikit-learn's default TSNE (BENCHMARKS.md, target 5).
FAST_TSNE_ITERATIONS = 100


def _tsne(x: np.ndarray, *, perplexity: float, seed: int, n_jobs: int, fast: bool = True) -> np.ndarray:
    from openTSNE import TSNE
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    # Defaults otherwise: PCA initialisation (stable global layout), learning rate n/12,
    # Barnes-Hut below 10k points and FFT interpolation above.
    n = x.shape[0]
    if n < 2_000:
        # Per-iteration thread start-up costs more than the work below a few thousand
        # points (12 points took 12 s with n_jobs=-1 on a busy 2-core machine, 0.1 s with 1).
        n_jobs = 1
    x64 = x.astype(np.float64, copy=False)
    if not fast:
        return np.asarray(TSNE(n_components=2, perplexity=perplexity, random_state=seed, n_jobs=n_jobs, verbose=False).fit(x64))
    kwargs = {}
    if n >= FAST_TSNE_MIN_POINTS:
        # 250 + 100 iterations instead of openTSNE's 250 + 500 (see BENCHMARKS.md, target 5).
        # FFT-interpolated gradients: at 10k points 12.9 s against 19.3 s for Barnes-Hut.
        kwargs = {"n_iter": FAST_TSNE_ITERATIONS, "negative_gradient_method": "fft"}
    tsne = TSNE(n_components=2, perplexity=perplexity, random_state=seed, n_jobs=n_jobs, verbose=False, **kwargs)
    k = min(n - 1, int(3 * perplexity))
    if n <= EXACT_KNN_MAX_POINTS:
        # Exact neighbours from blocked float32 matrix products: on 10k x 512 ~1 s, against
        # several seconds for openTSNE's Annoy index (which is also approximate).
        idx, dist = knn_euclidean(x, k)
        affinities = PerplexityBasedNN(perplexity=perplexity, knn_index=PrecomputedNeighbors(idx, dist), n_jobs=n_jobs,
                                       random_state=seed)
    else:
        affinities = PerplexityBasedNN(x64, perplexity=perplexity, method="annoy", n_jobs=n_jobs, random_state=seed)
    return np.asarray(tsne.fit(x64, affinities=affinities))


def knn_euclidean(x: np.ndarray, k: int, *, block_rows: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row among the other rows, by Euclidean distance.

    Returns ``(indices, distances)``, each ``(n, k)``, nearest first, the point itself
    excluded. Rows are ranked by ``|y|^2 - 2 x.y`` (a float32 matrix product per block of
    ``block_rows``), which orders neighbours as the distance does. 10k x 512: 0.9 s on 2 cores.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    k = min(k, n - 1)
    sq = np.einsum("ij,ij->i", x, x)
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        rows = np.arange(stop - start)
        score = x[start:stop] @ x.T
        score *= -2.0
        score += sq[None, :]
        score[rows, rows + start] = np.inf  # not its own neighbour
        part = np.argpartition(score, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(score, part, axis=1)
        order = np.argsort(part_scores, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(part, order, axis=1)
        nearest = np.take_along_axis(part_scores, order, axis=1).astype(np.float64) + sq[start:stop, None]
        dist[start:stop] = np.sqrt(np.maximum(nearest, 0.0))
    return idx, dist


def _umap(x: np.ndarray, *, seed: int, n_jobs: int) -> np.ndarray:
    umap = _import_umap()
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, x.shape[0] - 1), random_state=seed, n_jobs=n_jobs)
    return np.asarray(reducer.fit_transform(x))


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
    import re

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
    name = METHOD_TITLES[projection.method]
    if projection.method == "pca" and projection.explained_variance is not None:
        v1, v2 = projection.explained_variance
        return f"PC1 ({v1:.1%} of variance)", f"PC2 ({v2:.1%} of variance)"
    return f"{name} 1", f"{name} 2"


def _default_title(projection: Projection) -> str:
    name = METHOD_TITLES[projection.method]
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


def make_thumbnail(image_path: str | os.PathLike, *, size: int = 64, quality: int = 75) -> str | None:
    """Return a ``data:image/jpeg;base64,...`` URI of a small thumbnail, or ``None`` if unreadable.

    The image is only opened for reading; any failure (missing, corrupt, not an image)
    gives ``None`` rather than an exception.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(image_path) as im:
            im.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale, much faster
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=quality, optimize=True)
    except Exception:  # noqa: BLE001 - a broken image must never break the plot
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


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
) -> Path:
    """Write a self-contained interactive scatter plot (plotly.js inlined, works offline).

    Hovering a point shows its image thumbnail, path and label. Thumbnails are small
    inline JPEGs; images that cannot be read simply get none. Notices (thumbnails
    skipped, unreadable images) are logged to the ``transferkit`` logger and shown on the page.

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

    if point_paths is not None:
        out = path.resolve()
        if any(Path(p).resolve() == out for p in point_paths if p):
            raise ConfigError(f"Output {path} is one of the plotted images; choose another --out file.")

    thumbs: list[str | None] = [None] * n
    if thumbnails and point_paths is not None:
        if n > max_thumbnails:
            notices.append(
                f"No hover thumbnails: {n:,} points is over the limit of {max_thumbnails:,}. Hint: use --max-points {max_thumbnails} for thumbnails."
            )
        else:
            thumbs = [make_thumbnail(p, size=thumbnail_size) if p else None for p in point_paths]
            missing = sum(t is None for t in thumbs)
            if missing:
                notices.append(f"{missing} of {n} images could not be read; those points have no thumbnail.")
    for notice in notices[len(projection.notices):]:
        log.warning(notice)

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
