"""Project embeddings to 2-D: PCA, t-SNE (:mod:`.tsne`) or UMAP, on plain numpy arrays.

The same functions serve the CLI, the run report and notebooks; :mod:`.plots` draws the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, DataError, MissingDependencyError, unknown_name
from ..events import Callback, Reporter, make_reporter

METHODS = ("pca", "tsne", "umap")
METHOD_TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
# Fewer points than this and a neighbourhood embedding has nothing to preserve.
MIN_POINTS = {"pca": 2, "tsne": 5, "umap": 5}
# Above this many points t-SNE / UMAP subsample (unless ``max_points`` says otherwise):
# beyond it the picture stops changing while the run time keeps growing.
DEFAULT_MAX_POINTS = 50_000
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

    @property
    def method_title(self) -> str:
        """The method as people write it: ``"PCA"``, ``"t-SNE"``, ``"UMAP"``."""
        return METHOD_TITLES[self.method]


def check_projection_method(method: str) -> str:
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
    progress: Callback | Reporter | None = None,
    quiet: bool = False,
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
            gradients with 250 + 100 iterations. ``False``: openTSNE's defaults (Annoy
            neighbours, 250 + 500 iterations).
        progress: receives the events (t-SNE's iterations as a ``"tsne"`` task; notices as warnings).
        quiet: report nothing (when ``progress`` is not given).

    Returns:
        A :class:`Projection`.

    Raises:
        UnknownNameError: unknown ``method``.
        MissingDependencyError: ``method="umap"`` without umap-learn installed (raised first).
        ConfigError: bad ``perplexity``, ``max_points`` or ``seed``.
        DataError: not a 2-D array, too few rows, fewer than 2 columns, or non-finite values.
    """
    method = check_projection_method(method)  # before any work: a missing extra fails instantly
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
    x = _check_embeddings(embeddings, method)
    reporter = make_reporter(progress, quiet=quiet)

    num_total = x.shape[0]
    notices: list[str] = []
    limit = max_points if max_points is not None else (None if method == "pca" else DEFAULT_MAX_POINTS)
    indices = np.arange(num_total, dtype=np.int64)
    if limit is not None and num_total > limit:
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(num_total, size=int(limit), replace=False)).astype(np.int64)
        x = x[indices]
        notices.append(
            f"Projected a random subsample of {limit:,} of {num_total:,} embeddings (seed {seed}). "
            "Hint: raise `max_points` to use more."
        )
    n = x.shape[0]

    used_perplexity: float | None = None
    if method == "tsne":
        used_perplexity = perplexity
        max_perplexity = (n - 1) / 3.0  # openTSNE needs 3 * perplexity neighbours per point
        if perplexity > max_perplexity:
            used_perplexity = max_perplexity
            notices.append(
                f"Perplexity {perplexity:g} is too large for {n} points (must be <= (n - 1) / 3 = {max_perplexity:.2f}); "
                f"using {max_perplexity:.2f}."
            )
    for notice in notices:  # before the long part
        reporter.warning(notice)

    explained: tuple[float, float] | None = None
    if method == "pca":
        coords, explained = _pca(x, seed)
    elif method == "tsne":
        from .tsne import tsne

        coords = tsne(x, perplexity=used_perplexity, seed=int(seed), n_jobs=n_jobs, fast=bool(fast), reporter=reporter)
    else:
        coords = _umap(x, seed=int(seed), n_jobs=n_jobs)
    return Projection(
        coords=np.ascontiguousarray(coords, dtype=np.float32),
        method=method,
        indices=indices,
        num_total=int(num_total),
        explained_variance=explained,
        perplexity=used_perplexity,
        notices=notices,
    )


def _check_embeddings(embeddings, method: str) -> np.ndarray:
    """``embeddings`` as a float32 ``(N, D)`` array with enough rows for ``method``, or a DataError."""
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise DataError(f"Embeddings must be a 2-D array (n_samples, n_features); got shape {x.shape}.")
    num_total, dim = x.shape
    min_points = MIN_POINTS[method]
    if num_total < min_points:
        hint = " Embed more images or project with `method` 'pca'." if method != "pca" else ""
        raise DataError(f"{METHOD_TITLES[method]} needs at least {min_points} embeddings; got {num_total}.{hint}")
    if dim < 2:
        raise DataError(f"Embeddings need at least 2 dimensions to project to 2-D; got {dim}.")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"Embeddings must be numeric; got dtype {x.dtype}.")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise DataError(f"{bad} embedding(s) contain NaN or infinite values. Re-embed those images or drop them.")
    return x


def _pca(x: np.ndarray, seed: int) -> tuple[np.ndarray, tuple[float, float]]:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=seed)
    coords = pca.fit_transform(x)
    ratio = np.nan_to_num(pca.explained_variance_ratio_)  # all-identical rows give 0/0
    return coords, (float(ratio[0]), float(ratio[1]))


def _umap(x: np.ndarray, *, seed: int, n_jobs: int) -> np.ndarray:
    umap = _import_umap()
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, x.shape[0] - 1), random_state=seed, n_jobs=n_jobs)
    return np.asarray(reducer.fit_transform(x))
