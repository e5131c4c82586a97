"""Who may ask (the token, the Host header) and which files may be served (only stored rows inside the data root)."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

TOKEN_COOKIE = "transferkit_token"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: Starlette's TestClient sends ``Host: testserver``; no public DNS name can make a browser send it.
_TEST_HOST = "testserver"


def is_local_host(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    return host.strip().lower() in LOCAL_HOSTS or host.startswith("127.")


def generate_token() -> str:
    return secrets.token_urlsafe(24)


def request_token(request: Request) -> str | None:
    """The token a request carries: ``Authorization: Bearer``, ``?token=``, or the page's cookie."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)


def host_name(request: Request) -> str:
    host = request.headers.get("host", "")
    if host.startswith("["):
        return host[: host.find("]") + 1].lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


def make_guard(token: str | None, bound_host: str):
    """The HTTP middleware: with a token, refuse requests without it (401); without one (a local server), refuse
    Host headers other than this machine's, so a web page cannot reach the server by DNS rebinding."""
    allowed = set(LOCAL_HOSTS) | {bound_host.lower(), _TEST_HOST}

    async def guard(request: Request, call_next):
        if token is not None:
            given = request_token(request)
            if given is None:
                return JSONResponse({"error": "This server needs its access token: open the URL it printed (with ?token=...), "
                                              "or send `Authorization: Bearer <token>`."}, status_code=401)
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"error": "Wrong access token. Use the token `transferkit serve` printed."}, status_code=401)
        elif host_name(request) not in allowed:
            return JSONResponse({"error": f"Host {host_name(request)!r} is not allowed: this server is local. Open it as "
                                          f"http://127.0.0.1, or start it with --host and --token."}, status_code=400)
        response = await call_next(request)
        if token is not None and request.query_params.get("token") == token:
            # the page's own <img>/<script> requests carry no header: remember the token for this site only
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    return guard


def resolve_row_file(row: dict, data_root: str | None) -> Path:
    """The real file of a stored row, refused unless it lies inside the store's recorded data root.

    The path comes from the store row, never from the request; symlinks are resolved first, so
    a link that points out of the data root is refused like a ``../`` path.

    Raises:
        HTTPException: 403 outside the data root (or no data root recorded), 404 missing file.
    """
    if not data_root:
        raise HTTPException(403, "This store records no data root, so its image files are not served. "
                                 "Embed the folder with `transferkit embed` to record it.")
    try:
        root = Path(data_root).resolve(strict=True)
    except OSError:
        raise HTTPException(404, f"The store's data root {data_root} is missing; its images cannot be shown.") from None
    path = Path(row["path"])
    if not path.is_absolute():
        path = root / path
    try:
        real = path.resolve(strict=True)
    except OSError:
        raise HTTPException(404, f"The image file of id {row['id']!r} is missing. Re-embed the folder to drop it.") from None
    if not real.is_relative_to(root):
        raise HTTPException(403, f"The image file of id {row['id']!r} lies outside the store's data root; it is not served.")
    if not real.is_file():
        raise HTTPException(404, f"The image of id {row['id']!r} is not a file.")
    return real
