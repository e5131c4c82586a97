"""The Typer application every command module adds its commands to (imports nothing of the library)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="transferkit",
    help="Transfer learning for image folders: train a classifier, embed, visualise and search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    """Transfer learning for image folders: train a classifier, embed, visualise and search."""
