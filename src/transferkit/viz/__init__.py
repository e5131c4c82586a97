"""Embedding projections (PCA, t-SNE, UMAP) and their plots (PNG, interactive HTML)."""

from .plots import DEFAULT_MAX_THUMBNAILS, plot_html, plot_png
from .projection import DEFAULT_MAX_POINTS, METHODS, Projection, check_projection_method, project
from .store_projection import StoreMap, project_store, sample_stratified
from .thumbnails import make_thumbnail

__all__ = ["DEFAULT_MAX_POINTS", "DEFAULT_MAX_THUMBNAILS", "METHODS", "Projection", "check_projection_method",
           "StoreMap", "make_thumbnail", "plot_html", "plot_png", "project", "project_store",
           "sample_stratified"]
