"""``transferkit serve``: a local web app over an embedding store (map, search, items), on the public API.

``create_app(store, run=None, token=None, settings=None)`` builds the FastAPI app;
``serve(...)`` runs it with uvicorn. The HTTP contract is documented on the app's ``/docs``.
"""

from __future__ import annotations

from .app import create_app, serve

__all__ = ["create_app", "serve"]
