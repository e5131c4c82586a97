"""Exact and near-duplicate images in a store, grouped, with the copy to keep.

Exact duplicates share a content digest (the store's ``fingerprint``, blake2b of the file's
bytes). Near duplicates are found in two steps: *candidates*, pairs with embedding cosine >=
``threshold`` (exact blocked products for small stores, a faiss IVF range search for large
ones: :mod:`.candidates`; no N x N matrix either way), then *confirmation* by the pixel signal
of :mod:`.pixels` (tiny thumbnails, robust to resizing, re-encoding, 10% crops, flips and colour
shifts) >= ``pixel_threshold``, or, where an image file cannot be read (moved since it was
embedded), by cosine >= ``accept_threshold`` alone. Candidates
are merged by union-find, and every group is then split so that each member is itself a
confirmed duplicate of the group's kept image: a chain of near pairs (A~B, B~C) never joins
two different originals A and C.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from .candidates import BLOCK_ELEMENTS, candidate_pairs, near_pairs  # noqa: F401  (near_pairs: re-exported)
from .pixels import PixelChecker

# The floor and the fallback were chosen on flowers12, the pixel threshold on flowers12 and neu_steel, and all were
# checked on the other datasets by benchmarks/eval_duplicates.py (efficientnet_lite0, injected copies); see
# BENCHMARKS.md "Curation: near-duplicate threshold".
#: Cosine at or above which a pair is a near-duplicate *candidate*: the lowest copy's cosine to its original (0.82)
#: less a 0.05 margin, rounded down to 0.05. Below it, a pair is never a duplicate.
DEFAULT_THRESHOLD = 0.75
#: Cosine that decides alone where the pixel check cannot run (a file is unreadable, or ``pixels=False``): cosine
#: alone had pair precision 0.995 there (the one different-source pair above it is a real duplicate).
ACCEPT_THRESHOLD = 0.95
#: Thumbnail correlation (:mod:`.pixels`) that confirms a candidate: the middle of the range (0.93-0.95) where both
#: a photo set (flowers12) and a texture set (neu_steel) have recall and precision >= 0.95.
PIXEL_THRESHOLD = 0.94
DEFAULTS = {"threshold": DEFAULT_THRESHOLD, "accept_threshold": ACCEPT_THRESHOLD, "pixel_threshold": PIXEL_THRESHOLD}


@dataclass
class DuplicateGroup:
    """Rows that are copies of one another.

    Attributes:
        keep: the id to keep (largest resolution, then shortest path, then smallest id).
        ids: every member's id, the kept one first.
        paths: the members' paths, in the order of ``ids``.
        kind: ``exact`` when all members have the same bytes, else ``near``.
        min_similarity: the lowest cosine similarity of a member to the kept image.
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
        threshold: the candidate cosine threshold used.
        num_images: rows examined.
        num_exact_pairs, num_near_pairs: pairs found by digest, and candidate pairs confirmed.
        extra: how the search went: ``accept_threshold``, ``pixel_threshold``, ``num_candidates``,
            ``candidates_by`` (``exact``, ``ivf``, ``store-ivf``), ``pixel_read`` / ``pixel_unreadable``
            (images whose thumbnails were read / could not be; their pairs need ``accept_threshold``).
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
                "num_near_pairs": self.num_near_pairs, **self.extra, "groups": [g.to_dict() for g in self.groups]}


def check_threshold(threshold: float, name: str = "threshold") -> float:
    """``threshold`` as a float in (0, 1], else :class:`ConfigError` naming ``name``."""
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = float("nan")
    if not 0.0 < t <= 1.0:
        raise ConfigError(f"`{name}` must be a similarity in (0, 1]; got {threshold!r}. Try {DEFAULTS.get(name, DEFAULT_THRESHOLD)}.")
    return t


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




class Confirmer:
    """Whether two rows are duplicates: same digest, or cosine >= ``threshold`` and pixels >= ``pixel`` (cosine >= ``accept``
    where a file cannot be read).

    Args:
        rows: dicts with ``path`` and ``fingerprint``.
        vectors: ``(N, D)`` L2-normalised rows.
        pixels: a :class:`~transferkit.curate.pixels.PixelChecker` over the rows' paths, or None
            to decide on cosine alone (>= ``accept``).
    """

    def __init__(self, rows: list[dict[str, Any]], vectors: np.ndarray, *, threshold: float, accept: float, pixel: float,
                 pixels: PixelChecker | None):
        self.digests = [str(r.get("fingerprint") or "") for r in rows]
        self.vectors = vectors
        self.threshold, self.accept, self.pixel = threshold, max(accept, threshold), pixel
        self.pixels = pixels

    def confirm(self, keep: int, others: list[int]) -> tuple[list[int], list[float]]:
        """The rows of ``others`` that duplicate row ``keep``, with their cosine to it."""
        cos = self.vectors[others] @ self.vectors[keep]
        out, sims = [], []
        for i, c in zip(others, cos.tolist()):
            same = bool(self.digests[i]) and self.digests[i] == self.digests[keep]
            if same or self._near(keep, i, c):
                out.append(i)
                sims.append(1.0 if same else c)
        return out, sims

    def confirm_pairs(self, pairs: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """A mask of the candidate ``pairs`` (with their cosines ``sims``) that are duplicates."""
        if self.pixels is None:
            return (sims >= self.threshold) & (sims >= self.accept)
        self.pixels.prefetch(pairs.ravel())
        return np.asarray([self._near(int(a), int(b), float(c)) for (a, b), c in zip(pairs.tolist(), sims.tolist())],
                          dtype=bool).reshape(len(pairs))

    def _near(self, a: int, b: int, cos: float) -> bool:
        # the pixels decide whenever both files can be read: on textures (neu_steel) and uniform tiles (eurosat)
        # different images reach cosine 0.95, so cosine alone is only the fallback
        if cos < self.threshold:
            return False
        score = self.pixels.similarity(a, b) if self.pixels is not None else None
        return score >= self.pixel if score is not None else cos >= self.accept


def _components(nodes: list[int], pairs: np.ndarray) -> list[tuple[list[int], np.ndarray]]:
    """Connected components (of 2+ rows) of the graph ``pairs`` restricted to ``nodes``, each with its own pairs."""
    order = np.asarray(sorted(nodes), dtype=np.int64)
    local = np.searchsorted(order, pairs).clip(0, max(len(order) - 1, 0)) if len(order) else pairs
    inside = (order[local] == pairs).all(1) if len(order) and len(pairs) else np.zeros(len(pairs), dtype=bool)
    pairs, local = pairs[inside], local[inside]
    uf = _UnionFind(len(order))
    for a, b in local.tolist():
        uf.union(a, b)
    roots = np.asarray([uf.find(i) for i in range(len(order))], dtype=np.int64)
    sizes = np.bincount(roots, minlength=len(order)) if len(order) else np.zeros(0, np.int64)
    edge_root = roots[local[:, 0]] if len(local) else np.zeros(0, np.int64)
    # nodes and pairs sorted by component once: slicing each component is then O(its size)
    by_root, node_by_root = np.argsort(edge_root, kind="stable"), np.argsort(roots, kind="stable")
    starts = np.searchsorted(edge_root[by_root], np.arange(len(order) + 1))
    node_starts = np.searchsorted(roots[node_by_root], np.arange(len(order) + 1))
    out = []
    for root in np.flatnonzero(sizes > 1).tolist():
        members = order[node_by_root[node_starts[root]:node_starts[root + 1]]].tolist()
        out.append((members, pairs[by_root[starts[root]:starts[root + 1]]]))
    return out


def _split(component: list[int], pairs: np.ndarray, rows: list[dict[str, Any]],
           confirmer: Confirmer) -> list[tuple[list[int], float]]:
    """``component`` as groups whose members each duplicate the group's kept (first) row, with the lowest cosine to it."""
    out = []
    todo = [(component, pairs)]
    while todo:
        members, edges = todo.pop()
        members = sorted(members, key=lambda i: _keep_key(rows[i]))
        keep, rest = members[0], members[1:]
        kept, sims = confirmer.confirm(keep, rest)
        if kept:
            out.append(([keep, *kept], min(sims)))
        # what is left may hold other originals' copies, linked by their own pairs only
        todo.extend(_components(sorted(set(rest) - set(kept)), edges))
    return out


def group_duplicates(rows: list[dict[str, Any]], vectors: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD,
                     accept_threshold: float = ACCEPT_THRESHOLD, pixel_threshold: float = PIXEL_THRESHOLD,
                     pixels: bool = True, index=None, positions: np.ndarray | None = None,
                     block_elements: int = BLOCK_ELEMENTS) -> DuplicateReport:
    """Group ``rows`` (dicts with ``id``, ``path``, ``fingerprint``, ``width``, ``height``) by exact and near duplication.

    Args:
        rows: one per row of ``vectors``.
        vectors: ``(N, D)`` L2-normalised embeddings.
        threshold: cosine at or above which a pair is a candidate near duplicate.
        accept_threshold: cosine that confirms a candidate where the pixel check cannot run.
        pixel_threshold: thumbnail correlation at or above which a candidate is confirmed.
        pixels: read the candidates' images for the pixel check (False: cosine >= ``accept_threshold`` decides).
        index, positions: a faiss IVF index over the vectors to range-search (see
            :func:`~transferkit.curate.candidates.candidate_pairs`); None: exact or a temporary index, by size.

    Raises:
        ConfigError: a threshold outside (0, 1].
    """
    threshold = check_threshold(threshold)
    accept_threshold = check_threshold(accept_threshold, "accept_threshold")
    pixel_threshold = check_threshold(pixel_threshold, "pixel_threshold")
    if len(rows) != len(vectors):
        raise ValueError(f"{len(rows)} rows but {len(vectors)} vectors")
    n = len(rows)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    exact = exact_pairs([str(r.get("fingerprint") or "") for r in rows])
    if n > 1:
        near, sims, method = candidate_pairs(vectors, threshold, index=index, positions=positions,
                                             block_elements=block_elements)
    else:
        near, sims, method = np.empty((0, 2), np.int64), np.empty(0, np.float32), "exact"
    checker = PixelChecker([str(r.get("path") or "") for r in rows]) if pixels else None
    confirmer = Confirmer(rows, vectors, threshold=threshold, accept=accept_threshold, pixel=pixel_threshold, pixels=checker)
    # only confirmed pairs link rows; the split below still checks each member against its group's kept image
    confirmed = near[confirmer.confirm_pairs(near, sims)]
    edges = np.concatenate([exact, confirmed])
    groups = []
    for component, pairs in _components(list(range(n)), edges):
        for idx, low in _split(component, pairs, rows, confirmer):
            same_bytes = len({rows[i].get("fingerprint") for i in idx}) == 1 and bool(rows[idx[0]].get("fingerprint"))
            groups.append(DuplicateGroup(keep=str(rows[idx[0]]["id"]), ids=[str(rows[i]["id"]) for i in idx],
                                         paths=[str(rows[i].get("path", "")) for i in idx],
                                         kind="exact" if same_bytes else "near", min_similarity=round(low, 6)))
    groups.sort(key=lambda g: (-len(g.ids), g.keep))
    extra = {"accept_threshold": confirmer.accept, "pixel_threshold": pixel_threshold if pixels else None,
             "num_candidates": int(len(near)), "candidates_by": method,
             "pixel_read": checker.num_read if checker else 0, "pixel_unreadable": checker.num_unreadable if checker else 0}
    return DuplicateReport(groups, threshold, n, num_exact_pairs=len(exact), num_near_pairs=len(confirmed), extra=extra)


def find_duplicates(store: Any, *, threshold: float = DEFAULT_THRESHOLD, accept_threshold: float = ACCEPT_THRESHOLD,
                    pixel_threshold: float = PIXEL_THRESHOLD, pixels: bool = True, split: str | None = None) -> DuplicateReport:
    """Exact and near-duplicate images of an embedding store, grouped, with the copy to keep.

    Candidates come from the store's IVF index (:func:`~transferkit.build_index`) when it is up
    to date and covers the rows, else from exact products (small stores) or a temporary IVF
    index (large ones). The pixel check reads the candidates' image files; where a file is gone,
    its pairs need cosine >= ``accept_threshold`` (``extra["pixel_unreadable"]`` counts them).

    Args:
        store: an :class:`~transferkit.EmbeddingStore` or its folder.
        threshold, accept_threshold, pixel_threshold, pixels: see :func:`group_duplicates`.
        split: only rows of this split.

    Returns:
        A :class:`DuplicateReport`; ``to_dict()`` is the JSON form.

    Raises:
        ConfigError: a threshold outside (0, 1].
        StoreError: ``store`` is not a store.
    """
    from ..store import _lance
    from ..store.store import EmbeddingStore

    threshold = check_threshold(threshold)
    if isinstance(store, (str, os.PathLike)):
        store = EmbeddingStore.open(store)
    tbl = store.to_arrow(columns=["id", "path", "fingerprint", "width", "height", "vector"], split=split)
    vectors = _lance.matrix(tbl.column("vector"), store.dim)
    rows = tbl.drop(["vector"]).to_pylist()
    index, positions = _store_ivf(store, [r["id"] for r in rows])
    return group_duplicates(rows, vectors, threshold=threshold, accept_threshold=accept_threshold,
                            pixel_threshold=pixel_threshold, pixels=pixels, index=index, positions=positions)


def _store_ivf(store: Any, ids: list[str]) -> tuple[Any, np.ndarray | None]:
    """The store's IVF index and the row of each of its positions, when it is up to date and large enough to pay."""
    from .candidates import EXACT_MAX_WORK

    if len(ids) ** 2 * store.dim / 2 <= EXACT_MAX_WORK:
        return None, None
    ann = store.ann_index()
    if ann is None or getattr(ann, "info", {}).get("kind") != "faiss-ivf-flat-ip":  # HNSW: no range search; IVF-PQ: inexact
        return None, None
    row_of = {id_: r for r, id_ in enumerate(ids)}
    positions = np.asarray([row_of.get(str(i), -1) for i in ann.ids.tolist()], dtype=np.int64)
    if (positions >= 0).sum() < len(ids):  # rows the index does not cover (it is stale): build one
        return None, None
    return ann.index, positions
