"""Concurrent exact searches of one matrix answered together: one pass over the matrix for all of them.

An exact query is a scan of the whole matrix (200 MB at 100k x 512), so it is bound by memory
bandwidth; eight threads scanning it at once on 2 cores ran 3.6x slower per query than one
(BLAS threads oversubscribed), while one (8, D) x (D, N) product costs about what one query does.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class QueryBatcher:
    """Exact top-k over ``db`` for queries arriving from many threads at once.

    The first caller computes at once; callers that arrive while a scan runs wait and are
    answered by the next scan, all together (one thread leads it). A single caller pays nothing.

    Args:
        db: ``(N, D)`` float32 matrix (normalised rows), not copied.
    """

    def __init__(self, db: np.ndarray):
        self.db = db
        self._cv = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._busy = False
        self.scans = 0  # number of passes over the matrix (tests read it)

    def topk(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, scores)`` of the ``k`` rows most similar to one normalised ``(D,)`` query, best first."""
        slot: dict[str, Any] = {"q": query, "k": k, "done": False}
        with self._cv:
            self._pending.append(slot)
            while not slot["done"]:
                if self._busy:
                    self._cv.wait()
                    continue
                batch, self._pending, self._busy = self._pending, [], True
                self._cv.release()
                try:
                    self._scan(batch)
                finally:
                    self._cv.acquire()
                    self._busy = False
                    self._cv.notify_all()
        if "error" in slot:
            raise slot["error"]
        return slot["result"]

    def _scan(self, batch: list[dict[str, Any]]) -> None:
        from .search import exact_topk

        self.scans += 1
        try:
            idx, sc = exact_topk(self.db, np.stack([s["q"] for s in batch]), max(s["k"] for s in batch))
            for row, s in enumerate(batch):
                s["result"] = (idx[row, :s["k"]], sc[row, :s["k"]])
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
            for s in batch:
                s["error"] = exc
        for s in batch:
            s["done"] = True
