"""Leakage: evaluation images that are exact or near duplicates of training images.

The trainer calls :func:`split_leakage`, which compares its splits' file digests (exact copies
only); the result is warned about and recorded in ``metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..store.search import normalize
from .duplicates import BLOCK_ELEMENTS, DEFAULT_THRESHOLD, check_threshold

#: Pairs listed in the record (the count is always complete).
MAX_LISTED = 20


@dataclass
class LeakageReport:
    """Evaluation images that duplicate training images.

    Attributes:
        num_exact: evaluation images with the same bytes as a training image.
        num_near: further evaluation images with cosine >= ``threshold`` to a training image.
        pairs: up to :data:`MAX_LISTED` ``{"eval": path, "train": path, "similarity": s, "kind": ...}``, most similar first.
        threshold: the cosine threshold used.
    """

    num_exact: int
    num_near: int
    threshold: float
    pairs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def num_leaked(self) -> int:
        return self.num_exact + self.num_near

    def to_dict(self) -> dict[str, Any]:
        return {"num_leaked": self.num_leaked, "num_exact": self.num_exact, "num_near": self.num_near,
                "threshold": self.threshold, "pairs": list(self.pairs)}

    def warning(self, split: str = "val") -> str | None:
        """The one-line warning for a run, or None when nothing leaked."""
        if not self.num_leaked:
            return None
        return (f"{self.num_leaked} {split} images duplicate training images ({self.num_exact} exact, {self.num_near} near, "
                f"cosine >= {self.threshold}); {split} accuracy is optimistic. Hint: see \"leakage\" in metrics.json, "
                f"or run `transferkit duplicates` on the data's store.")


def best_match(queries: np.ndarray, db: np.ndarray, *, block_elements: int = BLOCK_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the most similar ``db`` row and its cosine (rows L2-normalised), in bounded blocks."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    x = np.ascontiguousarray(db, dtype=np.float32)
    best = np.full(len(q), -1, dtype=np.int64)
    sims = np.full(len(q), -np.inf, dtype=np.float32)
    if not len(x):
        return best, sims
    step = max(1, block_elements // len(x))
    for s in range(0, len(q), step):
        scores = q[s:s + step] @ x.T
        best[s:s + step] = scores.argmax(1)
        sims[s:s + step] = scores[np.arange(len(scores)), best[s:s + step]]
    return best, sims


def find_leakage(*, train_paths: list[str], eval_paths: list[str], train_digests: list[str] | None = None,
                 eval_digests: list[str] | None = None, train_features: np.ndarray | None = None,
                 eval_features: np.ndarray | None = None, threshold: float = DEFAULT_THRESHOLD) -> LeakageReport:
    """Evaluation images that are exact (same digest) or near (cosine of features >= ``threshold``) copies of training images.

    Args:
        train_paths, eval_paths: the images' paths (what the report lists).
        train_digests, eval_digests: content digests per image, or None to skip the exact check.
        train_features, eval_features: ``(N, D)`` features per image (normalised here), or None to skip the near check.
        threshold: cosine similarity in (0, 1].

    Raises:
        ConfigError: ``threshold`` outside (0, 1].
    """
    threshold = check_threshold(threshold)
    found: dict[int, dict[str, Any]] = {}
    if train_digests is not None and eval_digests is not None:
        first = {}
        for i, d in enumerate(train_digests):
            if d:
                first.setdefault(d, i)
        for j, d in enumerate(eval_digests):
            if d in first:
                found[j] = {"eval": eval_paths[j], "train": train_paths[first[d]], "similarity": 1.0, "kind": "exact"}
    num_exact = len(found)
    if train_features is not None and eval_features is not None and len(train_features) and len(eval_features):
        best, sims = best_match(normalize(eval_features), normalize(train_features))
        for j in np.flatnonzero(sims >= threshold).tolist():
            if j not in found:
                found[j] = {"eval": eval_paths[j], "train": train_paths[int(best[j])],
                            "similarity": round(float(sims[j]), 6), "kind": "near"}
    pairs = sorted(found.values(), key=lambda p: (-p["similarity"], p["eval"]))[:MAX_LISTED]
    return LeakageReport(num_exact, len(found) - num_exact, threshold, pairs)


def split_leakage(splits: Any, reporter: Any = None) -> dict[str, Any]:
    """Exact leakage between a run's train and val images (content digests), warned through ``reporter``; the record for metrics.json.

    Near copies need the features mapped to files, which the cached features do not carry yet: exact only here.
    """
    from .._hashing import file_digest

    def digests(paths):
        out = []
        for p in paths:
            try:
                out.append(file_digest(p))
            except OSError:  # unreadable files are the loader's to report
                out.append("")
        return out

    train, val = [str(p) for p in splits.train.paths], [str(p) for p in splits.val.paths]
    report = find_leakage(train_paths=train, eval_paths=val, train_digests=digests(train), eval_digests=digests(val))
    msg = report.warning("val")
    if msg and reporter is not None:
        reporter.warning(msg, num_leaked=report.num_leaked)
    return report.to_dict() | {"checked": "exact"}
