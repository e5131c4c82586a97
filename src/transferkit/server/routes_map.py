"""``/api/info`` and ``/api/points``: what the store holds, and its 2-D map."""

from __future__ import annotations

import json
from typing import Literal
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

import transferkit as tk
from transferkit.errors import close_matches

from .limits import MAX_K, MAX_POINTS, MAX_UPLOAD_BYTES

router = APIRouter(prefix="/api", tags=["map"])


def _projections() -> list[str]:
    methods = ["pca", "tsne"]
    try:
        tk.check_projection_method("umap")
        methods.append("umap")
    except tk.MissingDependencyError:
        pass
    return methods


def _notices(count: int, labels: dict[str, int]) -> list[str]:
    named = [name for name in labels if name]
    if count == 0:
        return ["The store is empty: embed a folder into it (`transferkit embed`) and reload."]
    out = []
    if not named:
        out.append("The images have no labels: the map has one colour and label filters do not apply.")
    elif len(named) == 1:
        out.append(f"Every labelled image is {named[0]!r}: the map has one colour.")
    return out


@router.get("/info", summary="What the store holds")
def info(request: Request) -> dict:
    """Count, dimension, model, ``{label: count}``, available projections, the ANN index and the run."""
    state = request.app.state.tk
    store = state.store()
    snap = store.snapshot()
    labels = state.label_counts(store)
    ann = store.ann_index(version=int(snap["version"]))
    index = None if ann is None else {"kind": str(ann.info.get("kind")), "recall_at_10": float(ann.info.get("recall_at_10", 0.0))}
    run = None if state.run is None else {"path": str(state.run.path), "classes": state.run.classes}
    return {"count": len(snap["id"]), "dim": store.dim, "model": tk.describe_model(store.model_id), "labels": labels,
            "projections": _projections(), "index": index, "run": run, "max_k": MAX_K,
            "max_upload_bytes": MAX_UPLOAD_BYTES, "max_points": MAX_POINTS, "notices": _notices(len(snap["id"]), labels)}


@router.get("/points", summary="The 2-D map", response_model=None)
def points(request: Request, method: str = Query("pca", description="pca | tsne | umap"),
           limit: int = Query(MAX_POINTS, ge=1, le=MAX_POINTS, description="At most this many points (stratified sample)"),
           format: Literal["json", "f32"] = Query("json", description="json, or f32: little-endian float32 x, y, label per point"),
           fields: Literal["all", "ids"] = Query("all", description="ids: only the metadata and the ids")) -> dict | Response:
    """The projection of every stored image (cached per store version and method), coordinates in [-1, 1].

    ``label`` (and ``predicted``, with a run; -1 where the run could not read the image) index ``labels``.
    Above ``limit`` the points are a sample stratified by label, and ``sampled`` is true. The order
    is the same for both formats of the same method and limit.
    """
    state = request.app.state.tk
    store = state.store()
    smap = tk.project_store(store, method=method)
    snap = store.snapshot()
    names = state.label_names(store)
    index_of = {name: i for i, name in enumerate(names)}

    def map_labels() -> list[str]:  # the label of each map point, once per store version and method
        pos = state.positions(store)
        rows = np.asarray([pos[str(i)] for i in smap.ids.tolist()], dtype=np.int64)
        return [str(x) for x in snap["label"][rows].tolist()] if len(rows) else []

    true = state.cached(f"map-labels-{smap.method}", store, map_labels)
    if fields == "ids" and format == "json":
        # serialised once per store version and limit: FastAPI's encoder took seconds over 1M ids
        def make() -> bytes:
            _, ids, _, _, meta = _sample(smap, snap, names, true, limit)
            return json.dumps({**meta, "ids": ids}, separators=(",", ":")).encode()
        return Response(content=state.cached(f"map-ids-{smap.method}-{limit}", store, make), media_type="application/json")
    if format == "f32":
        def make_f32() -> tuple[bytes, dict[str, str]]:
            _, ids, coords, label, meta = _sample(smap, snap, names, true, limit)
            data = np.column_stack([coords.astype(np.float32), np.asarray(label, dtype=np.float32)]).astype("<f4").tobytes()
            return data, {"X-Method": smap.method, "X-Total": str(meta["total"]), "X-Count": str(len(ids)),
                          "X-Sampled": "1" if meta["sampled"] else "0", "X-Labels": quote(json.dumps(names))}
        data, headers = state.cached(f"map-f32-{smap.method}-{limit}", store, make_f32)
        return Response(content=data, media_type="application/octet-stream", headers=headers)
    keep, ids, coords, label, meta = _sample(smap, snap, names, true, limit)
    predicted = correct = None
    preds = state.predictions(store)
    if preds is not None:
        got = [preds.get(i) for i in ids]
        predicted = [index_of[p["label"]] if p is not None and p["label"] in index_of else -1 for p in got]
        correct = [p is not None and p["label"] == names[t] for p, t in zip(got, label)]
    return JSONResponse({**meta, "ids": ids, "x": coords[:, 0].tolist(), "y": coords[:, 1].tolist(), "label": label,
                         "predicted": predicted, "correct": correct})


def _sample(smap, snap, names: list[str], true: list[str], limit: int):
    """``(rows kept, their ids, coords, label indices, metadata)`` of the map, sampled stratified above ``limit``."""
    index_of = {name: i for i, name in enumerate(names)}
    keep = tk.sample_stratified(true, limit)
    ids = [str(smap.ids[i]) for i in keep.tolist()]
    label = [index_of[true[i]] for i in keep.tolist()]
    total = len(snap["id"])
    notices = list(smap.notices)
    if len(keep) < len(smap.ids):
        notices.append(f"Showing a sample of {len(keep):,} of {total:,} images, stratified by label (limit {limit:,}).")
    meta = {"method": smap.method, "total": total, "count": len(ids), "sampled": len(ids) < total, "labels": names,
            "notices": notices}
    return keep, ids, smap.coords[keep], label, meta


def check_label(state, store, label: str | None) -> str | None:
    """``label`` as a filter (None or "" = no filter), or 400 naming the labels there are."""
    if label is None or label == "":
        return None
    labels = state.label_counts(store)
    if label not in labels:
        known = ", ".join(repr(name) for name in labels if name) or "none (the images are unlabelled)"
        raise HTTPException(400, f"Unknown label {label!r}.{close_matches(label, labels)} Labels: {known}.")
    return label
