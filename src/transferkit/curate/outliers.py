"""Outliers: images far from everything, and images far from their own class.

*Far from everything*: the mean cosine distance to the ``k`` nearest other images (:mod:`.knn`:
exact in blocks, or a faiss index for large stores; never an N x N matrix). *Far from their
class*: the cosine distance to the centroid of the image's class computed without the image,
as a robust z-score within the class (classes differ in spread), with the nearest other
class's centroid for comparison. Both lists are ranked, most extreme first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings
from ..errors import ConfigError, DataError
from ..events import Callback, Reporter, make_reporter
from .cards import Card, Section, write_json, write_page
from .knn import nearest_neighbours
from .source import RankedRow, StoreRows, load_rows

__all__ = ["ClassOutlier", "Outlier", "OutlierReport", "find_outliers", "outliers_of_rows", "robust_z"]

#: Default robust z-score from which an image counts as an outlier (the usual bar for the modified z-score).
DEFAULT_Z_THRESHOLD = 3.5
#: Classes smaller than this get no class-outlier scores (no spread to compare with).
MIN_CLASS_SIZE = 3
_NEIGHBOURS_SHOWN = 3


@dataclass
class Outlier(RankedRow):
    """An image far from every other image.

    Attributes:
        rank, id, path, relpath, split, label: the row and its place in the ranking (1 = most isolated).
        score: mean cosine distance (1 - similarity) to its ``k`` nearest other images.
        z: robust z-score of ``score`` over the dataset (median / MAD).
        neighbours: its nearest images (``id``, ``path``, ``label``, ``similarity``), nearest first.
    """

    label: str
    score: float
    z: float
    neighbours: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ClassOutlier(RankedRow):
    """An image far from the rest of its class.

    Attributes:
        rank, id, path, relpath, split, label: the row and its place in the ranking.
        distance: cosine distance to its class's centroid computed without it.
        z: robust z-score of ``distance`` within its class.
        nearest_class, nearest_class_distance: the other class whose centroid is closest, and how close
            (None with a single class).
        same_label_neighbours: share of its ``k`` nearest images that have its label.
    """

    label: str
    distance: float
    z: float
    nearest_class: str | None
    nearest_class_distance: float | None
    same_label_neighbours: float


@dataclass
class OutlierReport:
    """What :func:`find_outliers` found.

    Attributes:
        outliers: the ``top`` images farthest from everything, most isolated first.
        class_outliers: the ``top`` images farthest from their own class (labelled rows only).
        num_images, k, z_threshold: the inputs.
        num_flagged, num_class_flagged: images at or above ``z_threshold`` in each ranking.
        neighbours: how the neighbours were found (``exact``, ``store index``, ...) and the index's recall.
        store, model, embedded, seconds: where the vectors came from; wall time.
        scores: every row's kNN distance score (not in :meth:`to_dict`); row_ids: the rows' ids.
    """

    outliers: list[Outlier]
    class_outliers: list[ClassOutlier]
    num_images: int
    k: int
    z_threshold: float
    num_flagged: int
    num_class_flagged: int
    neighbours: dict[str, Any]
    store: str
    model: str
    embedded: dict[str, Any] | None = None
    seconds: float = 0.0
    scores: np.ndarray | None = field(default=None, repr=False)
    row_ids: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The report, JSON-ready (without the per-row score array)."""
        return {"num_images": self.num_images, "k": self.k, "z_threshold": self.z_threshold, "num_flagged": self.num_flagged,
                "num_class_flagged": self.num_class_flagged, "neighbours": self.neighbours, "store": self.store,
                "model": self.model, "embedded": self.embedded, "seconds": round(self.seconds, 3),
                "outliers": [o.to_dict() for o in self.outliers], "class_outliers": [o.to_dict() for o in self.class_outliers]}

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` to ``path``. Raises ConfigError when it cannot be written."""
        return write_json(path, self.to_dict())

    def write_html(self, path: str | os.PathLike) -> Path:
        """Write a self-contained page of both rankings with thumbnails. Raises ConfigError as above."""
        summary = {"images": f"{self.num_images:,}", "neighbours": f"k = {self.k}, {self.neighbours.get('method')}",
                   f"far from everything (z >= {self.z_threshold:g})": self.num_flagged,
                   f"far from their class (z >= {self.z_threshold:g})": self.num_class_flagged,
                   "model": self.model, "store": self.store}
        far = [Card(o.path, f"#{o.rank}  z {o.z:.1f}", [("muted", f"label: {o.label or '-'}"),
                                                         ("muted", f"mean distance to {self.k} nearest: {o.score:.3f}")])
               for o in self.outliers]
        own = [Card(o.path, f"#{o.rank}  z {o.z:.1f}", [("given", f"label: {o.label}"),
                                                         ("muted", f"distance to its class: {o.distance:.3f}"),
                                                         ("suggested", f"nearest other class: {o.nearest_class} ({o.nearest_class_distance:.3f})"
                                                          if o.nearest_class else "no other class")])
               for o in self.class_outliers]
        return write_page(path, title="Outliers", summary=summary, sections=[
            Section("far-from-everything", "Far from everything", f"Mean cosine distance to the {self.k} nearest images, "
                    "as a robust z-score over the dataset: unusual images, or images that do not belong to the dataset.", far),
            Section("far-from-class", "Far from their own class", "Cosine distance to the rest of the image's class, as a "
                    "robust z-score within the class: atypical members, or possible label errors.", own)])


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(v - median) / (1.4826 MAD)``: a z-score that a few extreme values cannot inflate (NaN stays NaN)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return np.full(v.shape, np.nan)
    med = np.median(v[ok])
    mad = np.median(np.abs(v[ok] - med)) * 1.4826
    return (v - med) / max(mad, 1e-9)


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"`{name}` must be a positive integer; got {value!r}.")
    return int(value)


def class_distances(vectors: np.ndarray, labels: np.ndarray, num_classes: int, *, block: int = 65_536):
    """Per row: cosine distance to its class centroid without the row, the nearest other class and its distance.

    The centroid without row ``x`` is ``S - x`` (``S`` the class sum), so one pass of ``x . S``
    gives every leave-one-out similarity: ``(x . S - 1) / |S - x|`` for unit ``x``.
    Rows of a class of one get NaN.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    sums = torch.zeros(num_classes, x.shape[1], dtype=torch.float64)
    for s in range(0, len(x), block):  # float64 sums without a float64 copy of the matrix
        sums.index_add_(0, y[s:s + block], x[s:s + block].double())
    sq = (sums * sums).sum(1)
    unit = (sums / sq.sqrt().clamp_min(1e-12)[:, None]).float()
    counts = torch.bincount(y, minlength=num_classes)
    own_d, near_d = np.empty(len(x)), np.empty(len(x))
    near = np.empty(len(x), dtype=np.int64)
    sums32 = sums.float()
    for s in range(0, len(x), block):
        xb, yb = x[s:s + block], y[s:s + block]
        dot_own = (xb * sums32[yb]).sum(1).double()
        rest = (sq[yb] - 2 * dot_own + 1).clamp_min(1e-12).sqrt()
        loo = torch.where(counts[yb] > 1, (dot_own - 1) / rest, torch.tensor(float("nan"), dtype=torch.float64))
        other = xb @ unit.T
        other[torch.arange(len(yb)), yb] = -float("inf")
        best, arg = other.max(1)
        own_d[s:s + block] = (1 - loo.clamp(-1, 1)).numpy()
        near[s:s + block] = arg.numpy()
        near_d[s:s + block] = (1 - best.double()).numpy()
    return own_d, near, near_d


def find_outliers(store_or_data: Any, *, k: int = 10, top: int = 100, z_threshold: float = DEFAULT_Z_THRESHOLD,
                  split: str | None = None, exact: bool | None = None, model: Any = None, store: str | os.PathLike | None = None,
                  batch_size: int = 64, progress: Callback | Reporter | None = None, quiet: bool = False,
                  settings: Settings | None = None) -> OutlierReport:
    """Rank the images far from everything (kNN distance) and those far from their own class.

    Args:
        store_or_data: an embedding store (folder or :class:`~transferkit.EmbeddingStore`) or an image folder (embedded first).
        k: neighbours per image for the kNN distance.
        top: images kept in each ranking.
        z_threshold: robust z-score from which an image is counted as an outlier.
        split: only this split's rows.
        exact: True: exact neighbours; False: an approximate index; None: exact up to 20,000 images.
        model, store, batch_size: for an image folder, as in :func:`~transferkit.find_label_issues`.
        progress, quiet, settings: as in :func:`~transferkit.find_label_issues`.

    Returns:
        :class:`OutlierReport`.

    Raises:
        ConfigError: ``k`` or ``top`` not a positive integer, a bad ``z_threshold``, or ``model``/``store`` with a store.
        DataError: fewer than two images; or a bad image folder.
        StoreError: a missing or empty store, or no row in ``split``.
    """
    t0 = time.perf_counter()
    k, top = _check_positive("k", k), _check_positive("top", top)
    if isinstance(z_threshold, bool) or not isinstance(z_threshold, int | float) or not np.isfinite(z_threshold):
        raise ConfigError(f"`z_threshold` must be a finite number; got {z_threshold!r}.")
    reporter = make_reporter(progress, quiet=quiet)
    rows = load_rows(store_or_data, model=model, store=store, split=split, batch_size=batch_size, reporter=reporter,
                     settings=settings)
    return outliers_of_rows(rows, k=k, top=top, z_threshold=z_threshold, exact=exact, use_store_index=split is None,
                            reporter=reporter, started=t0)


def outliers_of_rows(rows: StoreRows, *, k: int = 10, top: int = 100, z_threshold: float = DEFAULT_Z_THRESHOLD,
                     exact: bool | None = None, use_store_index: bool = True, reporter: Reporter | None = None,
                     started: float | None = None) -> OutlierReport:
    """:func:`find_outliers` on rows already loaded; ``use_store_index``: the rows are all of ``rows.store``'s.

    Raises:
        DataError: fewer than two rows.
    """
    t0 = time.perf_counter() if started is None else started
    reporter = reporter or Reporter(None)
    n = len(rows)
    if n < 2:
        raise DataError(f"Finding outliers needs at least two images; {rows.store.uri} has {n}. Add images.")
    nb = nearest_neighbours(rows.vectors, k, exact=exact, store=rows.store if use_store_index else None, row_ids=rows.ids,
                            reporter=reporter)
    k = nb.indices.shape[1]
    scores = np.nanmean(1.0 - nb.similarities.astype(np.float64), axis=1)
    z = robust_z(scores)
    order = np.lexsort((np.arange(n), -scores))[:top]
    labels = rows.labels.astype(str)

    def neighbours_of(i: int) -> list[dict[str, Any]]:
        return [{"id": str(rows.ids[j]), "path": rows.paths[j], "label": labels[j], "similarity": round(float(s), 6)}
                for j, s in zip(nb.indices[i, :_NEIGHBOURS_SHOWN].tolist(), nb.similarities[i, :_NEIGHBOURS_SHOWN].tolist()) if j >= 0]

    outliers = [Outlier(r, str(rows.ids[i]), rows.paths[i], rows.relpaths[i], str(rows.splits[i]), labels[i],
                        round(float(scores[i]), 6), round(float(z[i]), 3), neighbours_of(i)) for r, i in enumerate(order.tolist(), 1)]
    class_outliers, num_class_flagged = _class_outliers(rows, labels, nb, top, z_threshold)
    info = {"method": nb.method, **({"recall_at_10": nb.info.get("recall_at_10"), "kind": nb.info.get("kind")} if nb.info else {})}
    report = OutlierReport(outliers, class_outliers, n, k, float(z_threshold), int(np.sum(z >= z_threshold)), num_class_flagged,
                           info, rows.store.uri, rows.model, rows.embedded, time.perf_counter() - t0, scores, rows.ids)
    reporter.message(f"{report.num_flagged:,} images far from everything and {num_class_flagged:,} far from their class "
                     f"(z >= {z_threshold:g}) among {n:,}; {nb.method} neighbours, k = {k}; {report.seconds:.1f}s",
                     num_flagged=report.num_flagged, num_class_flagged=num_class_flagged, seconds=report.seconds)
    return report


def _class_outliers(rows, labels: np.ndarray, nb, top: int, z_threshold: float) -> tuple[list[ClassOutlier], int]:
    labelled = np.flatnonzero(labels != "")
    if labelled.size == 0:
        return [], 0
    classes, y = np.unique(labels[labelled], return_inverse=True)
    counts = np.bincount(y, minlength=len(classes))
    own_d, near, near_d = class_distances(rows.vectors[labelled], y, len(classes))
    z = np.full(len(labelled), np.nan)
    for c in np.flatnonzero(counts >= MIN_CLASS_SIZE):
        members = np.flatnonzero(y == c)
        z[members] = robust_z(own_d[members])
    neighbour_labels = np.where(nb.indices[labelled] >= 0, labels[np.maximum(nb.indices[labelled], 0)], None)
    same = (neighbour_labels == labels[labelled][:, None]).mean(1)
    ranked = np.flatnonzero(np.isfinite(z))
    ranked = ranked[np.lexsort((ranked, -z[ranked]))][:top]
    out = [ClassOutlier(r, str(rows.ids[i]), rows.paths[i], rows.relpaths[i], str(rows.splits[i]), labels[i],
                        round(float(own_d[p]), 6), round(float(z[p]), 3), str(classes[near[p]]) if len(classes) > 1 else None,
                        round(float(near_d[p]), 6) if len(classes) > 1 else None, round(float(same[p]), 4))
           for r, (p, i) in enumerate(((p, int(labelled[p])) for p in ranked.tolist()), 1)]
    return out, int(np.sum(np.nan_to_num(z, nan=-np.inf) >= z_threshold))
