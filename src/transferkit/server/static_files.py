"""The page and its assets: only files that ship in the package's ``static/`` folder, by name, never a listing."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

STATIC_DIR = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html",
               ".svg": "image/svg+xml", ".png": "image/png", ".json": "application/json", ".map": "application/json",
               ".woff2": "font/woff2", ".ico": "image/x-icon", ".wasm": "application/wasm"}


def shipped_files(folder: Path = STATIC_DIR) -> dict[str, Path]:
    """``{relative posix name: file}`` of the regular files under ``folder`` (symlinks and hidden files left out)."""
    if not folder.is_dir():
        return {}
    out = {}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_symlink() or not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        out[rel.as_posix()] = path
    return out


def make_router(folder: Path = STATIC_DIR) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    files = shipped_files(folder)  # the request names a key of this table, never a path on disk

    def send(name: str) -> FileResponse:
        path = files.get(name)
        if path is None:
            raise HTTPException(404, f"No file {name!r} ships with the page.")
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix.lower()), headers={"Cache-Control": "no-cache"})

    @router.get("/")
    def index() -> FileResponse:
        if "index.html" not in files:
            raise HTTPException(404, "The web page is not built into this installation (server/static/index.html is "
                                     "missing). Build it with `make web`, or use the API under /api (see /docs).")
        return send("index.html")

    @router.get("/docs")
    def docs() -> HTMLResponse:
        # FastAPI's own /docs loads Swagger UI from a CDN; these copies ship in static/docs/ so it works offline
        from fastapi.openapi.docs import get_swagger_ui_html

        if "docs/swagger-ui-bundle.js" not in files:
            raise HTTPException(404, "The API docs page is not built into this installation; /openapi.json has the API.")
        return get_swagger_ui_html(openapi_url="/openapi.json", title="transferkit API",
                                   swagger_js_url="/static/docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static/docs/swagger-ui.css",
                                   swagger_favicon_url="/static/docs/favicon-32x32.png")

    @router.get("/static/{name:path}")
    def static(name: str) -> FileResponse:
        return send(name)

    return router
