"""The FastAPI app: state, security, error handlers, routes; and ``serve`` to run it with uvicorn."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

import transferkit as tk

from . import routes_curate, routes_map, routes_search, static_files
from .handlers import install_handlers
from .security import generate_token, is_local_host, make_guard
from .state import ServerState
from .thumbnails import ThumbnailCache

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def create_app(store: Any, *, run: str | os.PathLike | None = None, token: str | None = None,
               settings: tk.Settings | None = None, host: str = DEFAULT_HOST, refresh_interval: float = 0.5) -> FastAPI:
    """The web app over ``store``.

    Args:
        store: an :class:`~transferkit.EmbeddingStore` or its folder.
        run: a run folder: points and items get the run's predicted label.
        token: when set, every request must carry it (``?token=``, ``Authorization: Bearer``, or the
            page's cookie); when not, only requests addressed to this machine are answered.
        settings: the pixel limit for uploads and thumbnails (default: the environment's).
        host: the address the server binds (allowed as a Host header).
        refresh_interval: seconds between checks for commits by other writers.

    Raises:
        StoreError: ``store`` is not a store. RunError: ``run`` is not a run.
    """
    state = ServerState(store, run=run, settings=settings, refresh_interval=refresh_interval)
    app = FastAPI(title="transferkit", version=tk.__version__, summary=f"Explore and search the embedding store {state.path}",
                  docs_url=None, redoc_url=None)  # /docs is served from the package's own files (static_files)
    app.state.tk = state
    app.state.thumbnails = ThumbnailCache(state.path)
    app.middleware("http")(make_guard(token, host))
    install_handlers(app)
    app.include_router(routes_map.router)
    app.include_router(routes_search.router)
    app.include_router(routes_curate.router)
    app.include_router(static_files.make_router())
    return app


def serve(store: Any, *, run: str | os.PathLike | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          token: str | None = None, settings: tk.Settings | None = None, echo=print) -> None:
    """Run the app with uvicorn until interrupted; a non-local ``host`` without ``token`` gets a generated one.

    ``echo`` receives the URL to open (with ``?token=`` when a token is set).
    """
    import uvicorn

    if token is None and not is_local_host(host):
        token = generate_token()
        echo(f"--host {host} is reachable from other machines: generated an access token ({token}).")
    app = create_app(store, run=run, token=token, settings=settings, host=host)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    echo(f"transferkit serve: {state_summary(app)}")
    echo(f"Open {url}  (Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)


def state_summary(app: FastAPI) -> str:
    store = app.state.tk.store()
    return f"{len(store)} images in {store.path} ({tk.describe_model(store.model_id)})"
