"""Command-line interface: parse arguments, call the public API, render. No logic of its own."""

from ._app import app, entrypoint, main

__all__ = ["app", "entrypoint", "main"]
