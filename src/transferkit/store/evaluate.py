"""Leave-one-out retrieval quality with labels as ground truth (precision, recall, mAP @k)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, StoreError
from .search import BLOCK_ELEMENTS, topk_rows


def retrieval_metrics(vectors: np.ndarray, labels: Sequence[str], ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Leave-one-out retrieval quality with labels as ground truth.

    Each vector queries all the others; a result is relevant when it has the query's label.

    Returns:
        ``p_at_k`` (precision@k), ``r_at_k`` (recall@k: share of the query's same-label
        items found in the top k), ``map_at_k`` (mean average precision@k, normalised by
        ``min(k, #relevant)``) for each k, ``num_queries`` and ``ks``.

    Raises:
        ConfigError: a cut-off below 1.
        StoreError: fewer than two vectors.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ConfigError(f"`ks` must be positive integers; got {ks}.")
    labels_arr = np.asarray(list(labels), dtype=object)
    n = len(labels_arr)
    if n < 2:
        raise StoreError("Retrieval evaluation needs at least two labelled embeddings.")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    _, codes = np.unique(labels_arr.astype(str), return_inverse=True)
    counts = np.bincount(codes)
    kmax = min(ks[-1], n - 1)
    sums = {f"{m}_at_{k}": 0.0 for k in ks for m in ("p", "r", "map")}
    block = max(1, BLOCK_ELEMENTS // n)
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = x[start:stop] @ x.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # leave the query out
        top_i, _ = topk_rows(sims, kmax)
        rel = (codes[top_i] == codes[start:stop, None]).astype(np.float64)  # (b, kmax)
        num_rel = counts[codes[start:stop]] - 1  # same-label items other than the query
        cum = np.cumsum(rel, axis=1)
        prec_at_i = cum / np.arange(1, kmax + 1)
        for k in ks:
            kk = min(k, kmax)
            sums[f"p_at_{k}"] += float(np.sum(cum[:, kk - 1] / k))
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where(num_rel > 0, cum[:, kk - 1] / np.maximum(num_rel, 1), 0.0)
                denom = np.minimum(k, num_rel)
                ap = np.where(denom > 0, np.sum(prec_at_i[:, :kk] * rel[:, :kk], axis=1) / np.maximum(denom, 1), 0.0)
            sums[f"r_at_{k}"] += float(np.sum(r))
            sums[f"map_at_{k}"] += float(np.sum(ap))
    out: dict[str, Any] = {key: round(v / n, 6) for key, v in sums.items()}
    out["num_queries"] = int(n)
    out["ks"] = ks
    return out


def search_eval(store: Any, ks: Sequence[int] = (1, 5, 10), *, split: str | None = None) -> dict[str, Any]:
    """Leave-one-out retrieval evaluation of a store (rows with a non-empty label).

    ``store`` is anything with ``path`` and ``snapshot()`` (an :class:`~transferkit.EmbeddingStore`).

    Returns:
        see :func:`retrieval_metrics` (keys ``p_at_1``, ``p_at_5``, ``p_at_10``, ``map_at_10``,
        ``r_at_k``..., ``num_queries``).

    Raises:
        StoreError: fewer than two labelled rows (e.g. a flat folder without class folders).
    """
    snap = store.snapshot()
    mask = snap["label"] != ""
    if split is not None:
        mask &= snap["split"] == split
    if int(mask.sum()) < 2:
        where = f" in split {split!r}" if split else ""
        raise StoreError(f"The store {store.path} has fewer than two labelled embeddings{where}; retrieval evaluation "
                         f"needs images in class folders (DATA/<class>/*.jpg).")
    return retrieval_metrics(snap["vectors"][mask], snap["label"][mask].tolist(), ks)
