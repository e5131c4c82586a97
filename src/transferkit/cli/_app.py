"""The Typer application and the entry point that turns errors into one-line messages.

Heavy modules (torch, timm, lancedb, ...) are imported inside the command functions so
that ``transferkit --help`` answers instantly.
"""

from __future__ import annotations

import sys

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


def _register_commands() -> None:
    # Each module adds its commands to ``app``; imported here so they share one app.
    from . import embed_cmds, pipeline_cmds, plot_cmds, train_cmds  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 runtime failure, 2 usage/config error, 130 interrupted)."""
    import click

    from ..errors import TransferKitError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _register_commands()
    try:
        app(args=args, prog_name="transferkit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.exceptions.Abort:
        _err("Interrupted.")
        return 130
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except TransferKitError as exc:
        if debug:
            raise
        _err(f"Error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        _err("Interrupted. Completed work is saved; re-run the same command with --resume (train) or again (embed) to continue.")
        return 130
    return 0


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())
