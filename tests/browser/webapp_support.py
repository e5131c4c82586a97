"""Helpers for the browser tests: find the system Chromium, run the real server on a free port, build edge-case stores.

A module of its own (not conftest.py) so the tests import it by a name no other test folder uses.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import transferkit as tk

SAMPLE = Path(tk.__file__).parent / "sample_data" / "hymenoptera_mini"
STATIC = Path(tk.__file__).parent / "server" / "static"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
#: software WebGL (SwiftShader): a headless machine has no GPU
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


def find_chromium() -> str | None:
    """The system Chromium: $TRANSFERKIT_CHROMIUM, else ``chromium``/``chromium-browser``/``google-chrome`` on PATH."""
    explicit = os.environ.get("TRANSFERKIT_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(store: Path, **kwargs) -> Iterator[str]:
    """``create_app(store, **kwargs)`` under uvicorn in a thread on a free local port; yields the base URL."""
    import uvicorn

    from transferkit.server import create_app

    port = free_port()
    config = uvicorn.Config(create_app(store, **kwargs), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def edge_store(tmp_path: Path, source: Path, rows: list[dict]) -> Path:
    """A store holding ``rows``, with the model and data root of ``source``."""
    src = tk.EmbeddingStore.open(source)
    store = tk.EmbeddingStore.create(tmp_path / "edge", model_id=src.model_id, source=src.meta.get("source"),
                                     extra={"data_root": src.meta["data_root"]})
    store.upsert(rows)
    return store.path
