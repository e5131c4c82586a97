"""``/api/search`` (by stored id, by uploaded image) and ``/api/items/{id}`` (details, thumbnail)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

import transferkit as tk

from .limits import ITEM_NEIGHBOURS, MAX_K, MAX_POINTS
from .routes_map import check_label
from .security import resolve_row_file
from .thumbnails import ThumbnailCache
from .uploads import decode_upload, read_form

router = APIRouter(prefix="/api", tags=["search"])
RESULT_KEYS = ("rank", "id", "path", "relpath", "label", "split", "score")


def _result(r: dict) -> dict:
    return {k: r[k] for k in RESULT_KEYS}


def _missing(item_id: str) -> HTTPException:
    return HTTPException(404, f"No image with id {item_id!r} in the store. Ids are the `ids` of /api/points and the "
                              f"`id` of search results.")


def _row(store, item_id: str) -> dict:
    """The whole stored row (size, fingerprint): one Lance scan, ~10 ms at 100k rows."""
    row = store.get(item_id)
    if row is None:
        raise _missing(item_id)
    return row


def search_by_id(store, item_id: str, *, k: int, label: str | None, exact: bool) -> list[dict]:
    """The query item first (score 1.0, when it passes the label filter), then its ``k - 1`` nearest neighbours.

    The query's vector comes from the store's cached snapshot (a dict lookup), not a table scan:
    the scan was most of a by-id search at 100k rows."""
    snap = store.snapshot()
    r = snap["row_of"].get(item_id)
    if r is None:
        raise _missing(item_id)
    if label is not None and snap["label"][r] != label:
        return [_result(x) for x in tk.search_store(store, id=item_id, top_k=k, label=label, exact=exact)]
    first = {"rank": 1, "id": item_id, "path": snap["path"][r], "relpath": snap["relpath"][r], "label": str(snap["label"][r]),
             "split": str(snap["split"][r]), "score": 1.0}
    rest = store.search(snap["vectors"][r], k - 1, label=label, exact=exact, exclude_ids=[item_id]) if k > 1 else []
    return [first] + [{**_result(x), "rank": x["rank"] + 1} for x in rest]


@router.get("/search", summary="Neighbours of a stored image")
def search_id(request: Request, id: str = Query(..., description="A stored image's id"),
              k: int = Query(10, ge=1, le=MAX_K), label: str | None = Query(None, description="Only results with this label"),
              exact: bool = Query(False, description="Exact search even when the store has an ANN index")) -> JSONResponse:
    """``[{"rank", "id", "path", "label", "score"}]``, rank 1 first: the query image itself, then its neighbours.
    The header ``X-Search`` says whether the exact scan or the ANN index answered."""
    state = request.app.state.tk
    store = state.store()
    label = check_label(state, store, label)
    results = search_by_id(store, id, k=k, label=label, exact=exact)
    return JSONResponse(results, headers={"X-Search": state.search_mode(store, exact=exact, label=label)})


_UPLOAD_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "The query image (at most max_upload_bytes)"},
        "k": {"type": "integer", "default": 10, "minimum": 1, "maximum": MAX_K},
        "label": {"type": "string", "description": "Only results with this label"},
        "exact": {"type": "boolean", "default": False}}}}}}}


def _form_int(fields: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = fields.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise HTTPException(422, f"Invalid request: `{name}` must be an integer from {lo} to {hi}; got {raw!r}.")
    return value


def _form_bool(fields: dict[str, str], name: str) -> bool:
    raw = fields.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise HTTPException(422, f"Invalid request: `{name}` must be 0 or 1; got {raw!r}.")


@router.post("/search", summary="Neighbours of an uploaded image", openapi_extra=_UPLOAD_FORM)
async def search_upload(request: Request) -> JSONResponse:
    """Multipart ``file`` (plus ``k``, ``label``, ``exact``): the image is decoded with the pixel limit, embedded
    with the store's model and searched; answers like ``GET /api/search``."""
    state = request.app.state.tk
    data, fields = await read_form(request)
    k = _form_int(fields, "k", 10, 1, MAX_K)
    exact = _form_bool(fields, "exact")
    store = state.store()
    label = check_label(state, store, fields.get("label"))
    image = decode_upload(data, max_pixels=state.settings.max_pixels)

    def run() -> list[dict]:
        extractor = state.extractor(store)
        with state.embed_lock:  # one query image through the model at a time
            found = tk.search_store(store, image=image, top_k=k, label=label, exact=exact, extractor=extractor)
        return [_result(r) for r in found]

    results = await run_in_threadpool(run)
    return JSONResponse(results, headers={"X-Search": state.search_mode(store, exact=exact, label=label)})


class ItemsQuery(BaseModel):
    ids: list[str] = Field(..., max_length=MAX_POINTS, description="Stored ids (at most max_points)")


@router.post("/items", summary="Paths and labels of many stored images")
def items(request: Request, body: ItemsQuery) -> list[dict]:
    """``[{"id", "path", "relpath", "label", "split"}]`` in the order of ``ids`` (a lasso selection's export):
    one lookup in the store's snapshot per id, not one request each."""
    state = request.app.state.tk
    snap = state.store().snapshot()
    row_of = snap["row_of"]
    missing = [i for i in body.ids if i not in row_of]
    if missing:
        raise HTTPException(404, f"{len(missing)} of the {len(body.ids)} ids are not in the store (first: {missing[0]!r}). "
                                 f"Ids are the `ids` of /api/points; reload the map if the store changed.")
    rows = [row_of[i] for i in body.ids]
    return [{"id": i, "path": snap["path"][r], "relpath": snap["relpath"][r], "label": str(snap["label"][r]),
             "split": str(snap["split"][r])} for i, r in zip(body.ids, rows)]


@router.get("/items/{item_id}", summary="One stored image")
def item(request: Request, item_id: str) -> dict:
    """Path, label, split, size, the run's prediction (with a run) and the ``k=8`` search results by id."""
    state = request.app.state.tk
    store = state.store()
    row = _row(store, item_id)
    preds = state.predictions(store)
    predicted = None if preds is None else preds.get(item_id)
    return {"id": row["id"], "path": row["path"], "relpath": row["relpath"], "label": row["label"], "split": row["split"],
            "width": int(row["width"]), "height": int(row["height"]), "predicted": predicted,
            "neighbours": search_by_id(store, item_id, k=ITEM_NEIGHBOURS, label=None, exact=False)}


@router.get("/items/{item_id}/thumbnail", summary="A stored image's thumbnail", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def thumbnail(request: Request, item_id: str) -> Response:
    """JPEG, long side <= 256 px. The file is the store row's, and only inside the store's data root."""
    state = request.app.state.tk
    store = state.store()
    row = _row(store, item_id)
    file = resolve_row_file(row, store.meta.get("data_root"))
    data = request.app.state.thumbnails.get(row, file, max_pixels=state.settings.max_pixels)
    if data is None:
        raise HTTPException(422, f"The image of id {item_id!r} cannot be decoded any more; re-embed the folder.")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400",
                                                             "ETag": f'"{ThumbnailCache.key(row)}"'})
