"""Embedding projections (PCA, t-SNE, UMAP) and their plots (PNG, interactive HTML)."""

from .plots import DEFAULT_MAX_THUMBNAILS, plot_html, plot_png
from .projection import DEFAULT_MAX_POINTS, METHODS, Projection, check_projection_method, project
from .thumbnails import make_thumbnail

__all__ = ["DEFAULT_MAX_POINTS", "DEFAULT_MAX_THUMBNAILS", "METHODS", "Projection", "check_projection_method",
           "make_thumbnail", "plot_html", "plot_png", "project"]
