"""``/api/label-issues`` and ``/api/outliers``: the store's likely label errors and outliers, computed once per store version."""

from __future__ import annotations

import threading

from fastapi import APIRouter, Query, Request

import transferkit as tk

router = APIRouter(prefix="/api", tags=["curation"])
#: Most entries an answer lists (the counts are always complete).
MAX_LISTED = 500
# One computation at a time: a second request for the same store version waits and reads the cache.
_lock = threading.Lock()


def _cut(report: dict, key: str, top: int) -> dict:
    return {**report, key: report[key][:top]}


@router.get("/label-issues", summary="Images whose given label is probably wrong")
def label_issues(request: Request, top: int = Query(100, ge=1, le=MAX_LISTED, description="Issues listed, most likely first")) -> dict:
    """``tk.find_label_issues`` on the store (5-fold heads on its vectors + confident learning), as its JSON:
    ``issues`` ``[{"rank", "id", "path", "given_label", "suggested_label", "score", ...}]``. A store that cannot be
    checked (one class, a class smaller than the folds, no labels) answers 400 with the reason."""
    state = request.app.state.tk
    store = state.store()
    with _lock:
        report = state.cached("label_issues", store, lambda: tk.find_label_issues(store, quiet=True).to_dict())
    return _cut(report, "issues", top)


@router.get("/outliers", summary="Images far from everything and far from their class")
def outliers(request: Request, top: int = Query(100, ge=1, le=MAX_LISTED, description="Images listed per ranking")) -> dict:
    """``tk.find_outliers`` on the store, as its JSON: ``outliers`` (mean distance to the 10 nearest) and
    ``class_outliers`` (distance to the rest of the class), most extreme first."""
    state = request.app.state.tk
    store = state.store()
    with _lock:
        report = state.cached("outliers", store, lambda: tk.find_outliers(store, top=MAX_LISTED, quiet=True).to_dict())
    return {**_cut(report, "outliers", top), "class_outliers": report["class_outliers"][:top]}
