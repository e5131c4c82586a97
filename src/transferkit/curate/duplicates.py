"""Exact and near-duplicate images in a store, grouped, with the copy to keep.

Exact duplicates share a content digest (the store's ``fingerprint``, blake2b of the file's
bytes). Near duplicates have cosine similarity >= ``threshold``; pairs are found by exact
blocked matrix products over chunks of the (normalised) vectors, so memory stays bounded by
:data:`BLOCK_ELEMENTS` scores and no N x N matrix is ever held. Pairs of both kinds are
merged into groups by union-find.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError

#: Default cosine threshold, measured by benchmarks/eval_duplicates.py (efficientnet_lite0, flowers12 + hymenoptera):
#: pair precision 0.977, recall 0.84 there (0.93 of copies land in their original's group); see BENCHMARKS.md.
DEFAULT_THRESHOLD = 0.9
#: Score elements (rows x columns) per block of the pairwise products: 16M float32 = 64 MB.
BLOCK_ELEMENTS = 16 * 1024 * 1024


@dataclass
class DuplicateGroup:
    """Rows that are copies of one another.

    Attributes:
        keep: the id to keep (largest resolution, then shortest path, then smallest id).
        ids: every member's id, the kept one first.
        paths: the members' paths, in the order of ``ids``.
        kind: ``exact`` when all members have the same bytes, else ``near``.
        min_similarity: the lowest cosine similarity over the confirmed pairs that joined the group.
    """

    keep: str
    ids: list[str]
    paths: list[str]
    kind: str
    min_similarity: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DuplicateReport:
    """What :func:`find_duplicates` found.

    Attributes:
        groups: the groups, largest first.
        threshold: the cosine threshold used.
        num_images: rows examined.
        num_exact_pairs, num_near_pairs: pairs found by digest and by similarity.
    """

    groups: list[DuplicateGroup]
    threshold: float
    num_images: int
    num_exact_pairs: int = 0
    num_near_pairs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_removable(self) -> int:
        """Images that could be deleted (every member but the kept one)."""
        return sum(len(g.ids) - 1 for g in self.groups)

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "num_images": self.num_images, "num_groups": len(self.groups),
                "num_removable": self.num_removable, "num_exact_pairs": self.num_exact_pairs,
                "num_near_pairs": self.num_near_pairs, "groups": [g.to_dict() for g in self.groups]}


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float in (0, 1], else :class:`ConfigError`."""
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = float("nan")
    if not 0.0 < t <= 1.0:
        raise ConfigError(f"`threshold` must be a cosine similarity in (0, 1]; got {threshold!r}. Try 0.9.")
    return t


def near_pairs(vectors: np.ndarray, threshold: float, *, block_elements: int = BLOCK_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``i < j`` of rows with cosine similarity >= ``threshold``, exactly, in bounded blocks.

    Args:
        vectors: ``(N, D)`` L2-normalised rows.
        threshold: cosine similarity in (0, 1].
        block_elements: most scores held at once (rows x columns of one block).

    Returns:
        ``(pairs (P, 2) int64, similarities (P,) float32)``.
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    found_pairs, found_sims = [np.empty((0, 2), np.int64)], [np.empty(0, np.float32)]
    col_step = max(1, min(n, block_elements))
    row_step = max(1, block_elements // col_step)
    for r0 in range(0, n, row_step):
        r1 = min(r0 + row_step, n)
        for c0 in range(r0, n, col_step):  # only columns at or after the block's first row: j > i below
            c1 = min(c0 + col_step, n)
            scores = x[r0:r1] @ x[c0:c1].T
            ri, ci = np.nonzero(scores >= threshold)
            rows, cols = ri + r0, ci + c0
            upper = cols > rows
            found_pairs.append(np.stack([rows[upper], cols[upper]], axis=1).astype(np.int64))
            found_sims.append(scores[ri[upper], ci[upper]].astype(np.float32))
    return np.concatenate(found_pairs), np.concatenate(found_sims)


def exact_pairs(digests: list[str]) -> np.ndarray:
    """Pairs ``(first, other)`` of rows with the same non-empty digest, each row joined to the first of its digest."""
    first: dict[str, int] = {}
    out = []
    for i, d in enumerate(digests):
        if not d:
            continue
        if d in first:
            out.append((first[d], i))
        else:
            first[d] = i
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _keep_key(row: dict[str, Any]) -> tuple:
    # the largest picture is the best copy; then the shortest path (usually the original name), then the id
    return (-int(row.get("width", 0)) * int(row.get("height", 0)), len(str(row.get("path", ""))), str(row["id"]))


def group_duplicates(rows: list[dict[str, Any]], vectors: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD,
                     block_elements: int = BLOCK_ELEMENTS) -> DuplicateReport:
    """Group ``rows`` (dicts with ``id``, ``path``, ``fingerprint``, ``width``, ``height``) by exact and near duplication.

    Args:
        rows: one per row of ``vectors``.
        vectors: ``(N, D)`` L2-normalised embeddings.
        threshold: cosine similarity at or above which two images are near duplicates.

    Raises:
        ConfigError: ``threshold`` outside (0, 1].
    """
    threshold = check_threshold(threshold)
    if len(rows) != len(vectors):
        raise ValueError(f"{len(rows)} rows but {len(vectors)} vectors")
    n = len(rows)
    exact = exact_pairs([str(r.get("fingerprint") or "") for r in rows])
    near, sims = near_pairs(vectors, threshold, block_elements=block_elements) if n > 1 else (np.empty((0, 2), np.int64), np.empty(0))
    uf = _UnionFind(n)
    for a, b in np.concatenate([exact, near]).tolist():
        uf.union(a, b)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(uf.find(i), []).append(i)
    min_sim: dict[int, float] = {}
    for (a, _), s in zip(near.tolist(), sims.tolist()):
        root = uf.find(a)
        min_sim[root] = min(min_sim.get(root, 1.0), float(s))
    groups = []
    for root, idx in members.items():
        if len(idx) < 2:
            continue
        ordered = sorted(idx, key=lambda i: _keep_key(rows[i]))
        same_bytes = len({rows[i].get("fingerprint") for i in idx}) == 1 and bool(rows[idx[0]].get("fingerprint"))
        groups.append(DuplicateGroup(keep=str(rows[ordered[0]]["id"]), ids=[str(rows[i]["id"]) for i in ordered],
                                     paths=[str(rows[i].get("path", "")) for i in ordered],
                                     kind="exact" if same_bytes else "near", min_similarity=round(min_sim.get(root, 1.0), 6)))
    groups.sort(key=lambda g: (-len(g.ids), g.keep))
    return DuplicateReport(groups, threshold, n, num_exact_pairs=len(exact), num_near_pairs=len(near))


def find_duplicates(store: Any, *, threshold: float = DEFAULT_THRESHOLD, split: str | None = None) -> DuplicateReport:
    """Exact and near-duplicate images of an embedding store, grouped, with the copy to keep.

    Args:
        store: an :class:`~transferkit.EmbeddingStore` or its folder.
        threshold: cosine similarity at or above which two images are near duplicates.
        split: only rows of this split.

    Returns:
        A :class:`DuplicateReport`; ``to_dict()`` is the JSON form.

    Raises:
        ConfigError: ``threshold`` outside (0, 1].
        StoreError: ``store`` is not a store.
    """
    from ..store import _lance
    from ..store.store import EmbeddingStore, sql_quote

    threshold = check_threshold(threshold)
    if isinstance(store, (str, os.PathLike)):
        store = EmbeddingStore.open(store)
    where = None if split is None else f"split = {sql_quote(split)}"
    tbl = store._scan(columns=["id", "path", "fingerprint", "width", "height", "vector"], where=where)
    vectors = _lance.matrix(tbl.column("vector"), store.dim)
    rows = tbl.drop(["vector"]).to_pylist()
    return group_duplicates(rows, vectors, threshold=threshold)
