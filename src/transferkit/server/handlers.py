"""Every error as JSON ``{"error": "..."}``: 4xx for the caller's mistakes, 500 (without internals) for bugs."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import transferkit as tk

log = logging.getLogger("transferkit.server")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body", "form")]
        name = ".".join(loc) or "request"
        given = err.get("input")
        got = f"; got {given!r}" if given is not None and not isinstance(given, dict) else ""
        parts.append(f"`{name}`: {err.get('msg', 'invalid')}{got}")
    return "Invalid request: " + "; ".join(parts) + "."


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError):
        return error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"Nothing at {request.url.path}. The page is at /, the API under /api/ (see /docs)."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        return error(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(tk.TransferKitError)
    async def on_transferkit(request: Request, exc: tk.TransferKitError):
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        if exc.exit_code == 2:  # the caller's own mistake (bad value, unknown name, unusable data)
            return error(404 if isinstance(exc, FileNotFoundError) else 400, first)
        log.error("%s: %s", type(exc).__name__, first)
        return error(500, first)  # a damaged store or unavailable weights: said plainly, no traceback

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception):
        log.exception("Unhandled error on %s %s", request.method, request.url.path)
        return error(500, f"Internal error ({type(exc).__name__}) on {request.url.path}; the server log has the details.")
