"""Command: serve (the web app over a store)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import setup_logging
from ._root import app


@app.command()
def serve(
    store: Path = typer.Argument(..., help="Embedding store folder."),
    run: Path | None = typer.Option(None, "--run", help="Run folder: colour the map by predicted label / correct-vs-wrong."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; a non-local one needs a token."),
    port: int = typer.Option(8765, "--port", min=1, max=65535),
    token: str | None = typer.Option(None, "--token", help="Access token every request must carry (generated for a non-local --host)."),
) -> None:
    """Explore STORE in the browser: the embedding map, search by image or by point, item details."""
    import transferkit as tk
    from transferkit.server import serve as run_server

    setup_logging(False)
    if token is not None and not token.strip():
        raise tk.ConfigError("`token` must not be empty. Omit --token on a local host, or pass a long random string.")
    run_server(store, run=run, host=host, port=port, token=token, echo=lambda line: print(line, flush=True))
