"""The entry point: registers the commands on the app, runs them, turns errors into one-line messages.

Heavy modules (torch, timm, lancedb, ...) are imported inside the command functions so
that ``transferkit --help`` answers instantly.
"""

from __future__ import annotations

import sys

from ._common import as_flags, defer_lancedb_rest_client
from ._root import app

__all__ = ["app", "as_flags", "entrypoint", "main"]


def _register_commands() -> None:
    # Importing a command module adds its commands to ``app``.
    from . import (  # noqa: F401
        curate_cmds,
        doctor_cmds,
        embed_cmds,
        export_cmds,
        label_issues_cmds,
        pipeline_cmds,
        plot_cmds,
        serve_cmds,
        store_cmds,
        train_cmds,
    )


def _exception_types() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(exit, abort, usage-error) exception classes of click and of the click copy newer Typer vendors."""
    import click

    exits: list[type] = [click.exceptions.Exit]
    aborts: list[type] = [click.exceptions.Abort]
    usage: list[type] = [click.ClickException]
    try:
        import typer.exceptions as typer_exc

        exits.append(typer_exc.Exit)
        aborts.append(typer_exc.Abort)
        from typer._click import exceptions as vendored  # typer >= 0.2x ships its own click

        usage.append(vendored.ClickException)
    except (ImportError, AttributeError):  # pragma: no cover - older typer uses click itself
        pass
    return tuple(exits), tuple(aborts), tuple(usage)


_INTERRUPTED = ("Interrupted. Completed work is saved; re-run the same command with --resume (train) "
                "or again (embed) to continue.")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 runtime failure, 2 usage/config error, 130 interrupted)."""
    import transferkit as tk

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _register_commands()
    defer_lancedb_rest_client()  # the CLI owns its process; the library leaves sys.modules alone
    exits, aborts, usage = _exception_types()
    try:
        # Non-standalone Typer returns an exit code instead of raising for Ctrl-C (130) and ctx.exit(n).
        # obj: the arguments, for a command that runs itself again in other processes (train --nproc)
        rv = app(args=args, prog_name="transferkit", standalone_mode=False, obj={"argv": args})
    except exits as exc:
        return int(exc.exit_code or 0)
    except aborts:
        _err(_INTERRUPTED)
        return 130
    except usage as exc:
        exc.show()
        return int(exc.exit_code)
    except tk.TransferKitError as exc:
        if debug:
            raise
        _err(f"Error: {as_flags(str(exc))}")
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        _err(_INTERRUPTED)
        return 130
    if isinstance(rv, int) and not isinstance(rv, bool):
        if rv == 130:
            _err(_INTERRUPTED)
        return rv
    return 0


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def entrypoint() -> None:
    """Console-script entry point: run the command, then end the process without the interpreter's teardown.

    Once a command has returned, every file it wrote is closed and committed, and tearing down
    the interpreter only unloads modules (mostly PyTorch's operator-library finalizers): skipping
    it saves ~0.6 s per command. The streams and the logging handlers are flushed first. The
    ordinary exit is kept when a non-daemon thread or a child process is still running, since
    the interpreter would wait for (or stop) it, and under a tracer or profiler (coverage,
    cProfile), which writes its data at exit.
    """
    code = main()
    _exit_without_teardown(code)


def _exit_without_teardown(code: int) -> None:
    import logging
    import os
    import threading

    mp = sys.modules.get("multiprocessing")
    if (any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread())
            or (mp is not None and mp.active_children())  # the ordinary exit stops child processes
            or sys.gettrace() is not None or sys.getprofile() is not None):  # coverage, cProfile write their data at exit
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a reader that went away (`| head`)
            pass
    os._exit(code)
