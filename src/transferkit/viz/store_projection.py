"""The 2-D map of a store: a projection computed once per store version and method, cached in the store folder,
and a stratified sample of it for a client that cannot draw every point."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .projection import MIN_POINTS, check_projection_method, project

__all__ = ["PROJECTIONS_DIR", "StoreMap", "project_store", "sample_stratified"]

#: Folder inside the store that holds the cached projections (one ``<method>.npz`` each).
PROJECTIONS_DIR = "projections"
_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class StoreMap:
    """The projection of a store at one version.

    Attributes:
        method: ``"pca"``, ``"tsne"`` or ``"umap"``.
        version: the store version it was computed from.
        ids: ``(n,)`` row ids, in the map's order.
        coords: ``(n, 2)`` float32 coordinates, scaled into ``[-1, 1]`` with the aspect ratio kept.
        num_total: rows in the store (more than ``n`` when t-SNE / UMAP projected a subsample).
        notices: what was changed (too few points for the method, subsampling).
    """

    method: str
    version: int
    ids: np.ndarray
    coords: np.ndarray
    num_total: int
    notices: list[str] = field(default_factory=list)


def _lock(path: Path, method: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((str(path.resolve()), method), threading.Lock())


def project_store(store: Any, *, method: str = "pca", seed: int = 0, progress=None, quiet: bool = True) -> StoreMap:
    """The 2-D map of ``store`` by ``method``, from ``<store>/projections/<method>.npz`` when that was computed
    from the store's current version, else computed now (:func:`~transferkit.project`) and cached there.

    A store with fewer rows than the method needs (5 for t-SNE / UMAP, 2 for PCA) gets a PCA
    map, or every point at the origin, with a notice, rather than an error.

    Args:
        store: an open :class:`~transferkit.EmbeddingStore`.
        method: ``"pca"``, ``"tsne"`` or ``"umap"``.
        seed: the projection's seed.

    Raises:
        UnknownNameError: unknown ``method``. MissingDependencyError: UMAP without umap-learn.
    """
    method = check_projection_method(method)
    snap = store.snapshot()
    version = int(snap["version"])
    cache = Path(store.path) / PROJECTIONS_DIR / f"{method}.npz"
    with _lock(Path(store.path), method):
        cached = _read(cache, method, version, seed)
        if cached is not None:
            return cached
        result = _compute(snap, method, version, seed, progress, quiet)
        _write(cache, result, seed)
        return result


def _compute(snap: dict[str, Any], method: str, version: int, seed: int, progress, quiet: bool) -> StoreMap:
    ids, vectors = snap["id"], snap["vectors"]
    n = len(ids)
    notices: list[str] = []
    use = method
    if n < MIN_POINTS[method] and n >= MIN_POINTS["pca"]:
        use = "pca"
        notices.append(f"{method} needs at least {MIN_POINTS[method]} images; the store has {n}, so this map is PCA.")
    if n < MIN_POINTS["pca"]:
        if n:
            notices.append(f"The store has {n} image; it is drawn at the centre.")
        return StoreMap(method, version, np.asarray(ids, dtype=object), np.zeros((n, 2), np.float32), n, notices)
    proj = project(vectors, method=use, seed=seed, progress=progress, quiet=quiet)
    notices.extend(proj.notices)
    return StoreMap(method, version, np.asarray(ids, dtype=object)[proj.indices], _scale(proj.coords), n, notices)


def _scale(coords: np.ndarray) -> np.ndarray:
    """Centre and scale into [-1, 1], the same factor on both axes."""
    coords = np.asarray(coords, dtype=np.float64)
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    span = float((hi - lo).max())
    centred = coords - (lo + hi) / 2.0
    return (centred / (span / 2.0) if span > 0 else np.zeros_like(centred)).astype(np.float32)


def _read(path: Path, method: str, version: int, seed: int) -> StoreMap | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != version or int(z["seed"]) != seed:
                return None
            notices = [str(s) for s in z["notices"].tolist()]
            return StoreMap(method, version, z["ids"].astype(object), z["coords"].astype(np.float32), int(z["num_total"]), notices)
    except (OSError, KeyError, ValueError):  # missing, or damaged: recompute
        return None


def _write(path: Path, result: StoreMap, seed: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        np.savez(tmp, version=result.version, seed=seed, ids=np.asarray(result.ids, dtype=str), coords=result.coords,
                 num_total=result.num_total, notices=np.asarray(result.notices, dtype=str))
        os.replace(tmp, path)
    except OSError:  # a read-only store still answers; it only recomputes next time
        pass


def sample_stratified(labels, limit: int, *, seed: int = 0) -> np.ndarray:
    """Sorted positions of at most ``limit`` of ``labels``, each label keeping its share (at least one each where possible).

    Returns every position when there are no more than ``limit``.
    """
    labels = np.asarray(labels, dtype=object)
    n = len(labels)
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    names, inverse = np.unique(labels.astype(str), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(names))
    quota = np.floor(counts * (limit / n)).astype(np.int64)
    quota = np.maximum(quota, np.minimum(counts, 1)) if limit >= len(names) else quota
    # hand out what rounding left over to the labels with the largest remainders
    spare = limit - int(quota.sum())
    if spare > 0:
        remainder = counts * (limit / n) - quota
        for i in np.argsort(-remainder, kind="stable"):
            if spare == 0:
                break
            if quota[i] < counts[i]:
                quota[i] += 1
                spare -= 1
    while quota.sum() > limit:  # the at-least-one rule overshot: take from the largest
        quota[int(np.argmax(quota))] -= 1
    picked = [rng.choice(np.flatnonzero(inverse == i), size=int(q), replace=False) for i, q in enumerate(quota) if q > 0]
    return np.sort(np.concatenate(picked)).astype(np.int64) if picked else np.zeros(0, dtype=np.int64)
