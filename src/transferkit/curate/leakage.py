"""Leakage: evaluation (val/test) images that are exact or near duplicates of training images.

An exact copy has a training image's content digest. A near copy has a training image among
its :data:`MAX_CHECKS` most cosine-similar ones, at cosine >= ``threshold`` (the duplicates
candidate threshold), whose thumbnails correlate >= ``pixel_threshold`` (:mod:`.pixels`), as for
``transferkit duplicates``: a high cosine is never enough alone (a trained model's embeddings put
any two images of a class close together). Where a file cannot be read, cosine >=
:data:`~.duplicates.ACCEPT_THRESHOLD` decides.

:func:`leakage_record` is what ``train`` and ``pipeline`` write to ``metrics.json`` and warn about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..store.search import normalize
from .candidates import BLOCK_ELEMENTS, EXACT_MAX_WORK, QUERY_BATCH, RANGE_NPROBE, build_ivf
from .duplicates import ACCEPT_THRESHOLD, DEFAULT_THRESHOLD, PIXEL_THRESHOLD, check_threshold
from .pixels import PixelChecker

#: Pairs listed per split in the record (the counts are always complete).
MAX_LISTED = 10
#: Training images per evaluation image whose pixels are compared, most similar first.
MAX_CHECKS = 5


@dataclass
class LeakageReport:
    """Evaluation images that duplicate training images.

    Attributes:
        num_exact: evaluation images with the same bytes as a training image.
        num_near: further evaluation images that are near copies of a training image.
        pairs: up to :data:`MAX_LISTED` ``{"eval": path, "train": path, "similarity": cosine, "kind": ...}``, most similar first.
        threshold, pixel_threshold: the candidate cosine and the pixel threshold used.
    """

    num_exact: int
    num_near: int
    threshold: float
    pixel_threshold: float | None = PIXEL_THRESHOLD
    pairs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def num_leaked(self) -> int:
        return self.num_exact + self.num_near

    def to_dict(self) -> dict[str, Any]:
        return {"num_leaked": self.num_leaked, "num_exact": self.num_exact, "num_near": self.num_near,
                "threshold": self.threshold, "pixel_threshold": self.pixel_threshold, "pairs": list(self.pairs)}

    def warning(self, split: str = "val") -> str | None:
        """The one-line warning for one split, or None when nothing leaked."""
        return leakage_warning({split: self.to_dict()})


def top_candidates(queries: np.ndarray, db: np.ndarray, threshold: float, *, k: int = MAX_CHECKS,
                   block_elements: int = BLOCK_ELEMENTS,
                   exact_max_work: float = EXACT_MAX_WORK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(query_row, db_row, cosine)`` of each query's ``k`` most similar ``db`` rows at cosine >= ``threshold``,
    most similar first per query (rows L2-normalised; bounded blocks, no full matrix).

    Above ``exact_max_work`` multiply-adds (queries x rows x dim) the rows go into a temporary faiss
    IVF-Flat index (:func:`~.candidates.build_ivf`): its scores are exact cosines, and only a row in a list
    the search does not probe can be missed.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    x = np.ascontiguousarray(db, dtype=np.float32)
    out_q, out_d, out_s = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [np.empty(0, np.float32)]
    if not len(x) or not len(q):
        return out_q[0], out_d[0], out_s[0]
    k = min(k, len(x))
    if len(q) * len(x) * x.shape[1] > exact_max_work:
        return _ivf_candidates(q, x, threshold, k)
    step = max(1, block_elements // len(x))
    for s in range(0, len(q), step):
        scores = q[s:s + step] @ x.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < len(x) else np.tile(np.arange(len(x)), (len(scores), 1))
        sims = np.take_along_axis(scores, top, 1)
        order = np.argsort(-sims, axis=1, kind="stable")
        top, sims = np.take_along_axis(top, order, 1), np.take_along_axis(sims, order, 1)
        r, c = np.nonzero(sims >= threshold)
        out_q.append(r + s)
        out_d.append(top[r, c])
        out_s.append(sims[r, c])
    return np.concatenate(out_q), np.concatenate(out_d).astype(np.int64), np.concatenate(out_s)


def _ivf_candidates(q: np.ndarray, x: np.ndarray, threshold: float, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from ..store._faiss import load as _faiss

    index = build_ivf(x)
    _faiss().extract_index_ivf(index).nprobe = RANGE_NPROBE
    out_q, out_d, out_s = [], [], []
    for s in range(0, len(q), QUERY_BATCH):
        sims, top = index.search(q[s:s + QUERY_BATCH], k)  # best first; -1 where a probe found fewer than k
        r, c = np.nonzero((sims >= threshold) & (top >= 0))
        out_q.append(r + s)
        out_d.append(top[r, c])
        out_s.append(sims[r, c])
    return np.concatenate(out_q), np.concatenate(out_d).astype(np.int64), np.concatenate(out_s).astype(np.float32)


def find_leakage(*, train_paths: list[str], eval_paths: list[str], train_digests: list[str] | None = None,
                 eval_digests: list[str] | None = None, train_features: np.ndarray | None = None,
                 eval_features: np.ndarray | None = None, threshold: float = DEFAULT_THRESHOLD,
                 pixel_threshold: float = PIXEL_THRESHOLD, pixels: bool = True) -> LeakageReport:
    """Evaluation images that are exact (same digest) or near copies of training images.

    Args:
        train_paths, eval_paths: the images' paths (what the report lists; the pixel check reads them).
        train_digests, eval_digests: content digests per image, or None to skip the exact check.
        train_features, eval_features: ``(N, D)`` features per image (normalised here), or None to skip the near check.
        threshold: cosine at or above which a training image is a candidate.
        pixel_threshold: thumbnail correlation that confirms a candidate.
        pixels: False: no pixel check, candidates need cosine >= ``ACCEPT_THRESHOLD``.

    Raises:
        ConfigError: a threshold outside (0, 1].
    """
    threshold = check_threshold(threshold)
    pixel_threshold = check_threshold(pixel_threshold, "pixel_threshold")
    found: dict[int, dict[str, Any]] = {}
    if train_digests is not None and eval_digests is not None:
        first: dict[str, int] = {}
        for i, d in enumerate(train_digests):
            if d:
                first.setdefault(d, i)
        for j, d in enumerate(eval_digests):
            if d in first:
                found[j] = {"eval": eval_paths[j], "train": train_paths[first[d]], "similarity": 1.0, "kind": "exact"}
    num_exact = len(found)
    if train_features is not None and eval_features is not None and len(train_features) and len(eval_features):
        checker = PixelChecker([str(p) for p in (*train_paths, *eval_paths)]) if pixels else None
        qi, ti, sims = top_candidates(normalize(eval_features), normalize(train_features), threshold)
        if checker is not None:
            checker.prefetch(np.concatenate([ti, len(train_paths) + qi]))
        for j, i, s in zip(qi.tolist(), ti.tolist(), sims.tolist()):
            if j in found:
                continue
            score = checker.similarity(i, len(train_paths) + j) if checker is not None else None
            if (score is not None and score >= pixel_threshold) or (score is None and s >= ACCEPT_THRESHOLD):
                found[j] = {"eval": eval_paths[j], "train": train_paths[i], "similarity": round(float(s), 6), "kind": "near"}
    pairs = sorted(found.values(), key=lambda p: (-p["similarity"], p["eval"]))[:MAX_LISTED]
    return LeakageReport(num_exact, len(found) - num_exact, threshold, pixel_threshold if pixels else None, pairs)


def leakage_warning(per_split: dict[str, dict[str, Any]]) -> str | None:
    """One warning line for the record's splits (``{split: LeakageReport.to_dict()}``), or None when nothing leaked."""
    leaked = {s: r for s, r in per_split.items() if r.get("num_leaked")}
    if not leaked:
        return None
    counts = " and ".join(f"{r['num_leaked']} {s}" for s, r in leaked.items())
    exact = sum(r["num_exact"] for r in leaked.values())
    near = sum(r["num_near"] for r in leaked.values())
    split, rec = next(iter(leaked.items()))
    example = rec["pairs"][0] if rec.get("pairs") else None
    where = f" (e.g. {example['eval']} ~ {example['train']})" if example else ""
    names = "/".join(leaked)
    return (f"{counts} images duplicate training images ({exact} exact, {near} near){where}; {names} accuracy is "
            f"optimistic. Hint: see \"leakage\" in metrics.json, or run `transferkit duplicates` on the data's store.")


def leakage_record(per_split: dict[str, LeakageReport], *, checked: str, note: str | None = None) -> dict[str, Any]:
    """The ``leakage`` entry of metrics.json: totals, then each split's counts and example pairs."""
    splits = {s: r.to_dict() for s, r in per_split.items()}
    rec: dict[str, Any] = {"num_leaked": sum(r["num_leaked"] for r in splits.values()),
                           "num_exact": sum(r["num_exact"] for r in splits.values()),
                           "num_near": sum(r["num_near"] for r in splits.values()), "checked": checked, **splits}
    if note:
        rec["note"] = note
    return rec


def store_leakage(store: Any, *, train_split: str = "train", eval_splits: tuple[str, ...] = ("val", "test")) -> dict[str, LeakageReport]:
    """Leakage between a store's training rows and each of ``eval_splits`` present, from its digests and vectors."""
    from ..store import _lance

    tbl = store.to_arrow(columns=["path", "split", "fingerprint", "vector"])
    split = np.asarray(tbl.column("split").to_pylist(), dtype=object)
    paths, digests = tbl.column("path").to_pylist(), tbl.column("fingerprint").to_pylist()
    vectors = _lance.matrix(tbl.column("vector"), store.dim)
    train = np.flatnonzero(split == train_split)
    out = {}
    for name in eval_splits:
        rows = np.flatnonzero(split == name)
        if len(rows) and len(train):
            out[name] = find_leakage(train_paths=[paths[i] for i in train], eval_paths=[paths[i] for i in rows],
                                     train_digests=[digests[i] for i in train], eval_digests=[digests[i] for i in rows],
                                     train_features=vectors[train], eval_features=vectors[rows])
    return out
