"""Helpers shared by the command modules: output, the event renderer, logging, and flag names in messages."""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._root import app


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def renderer(quiet: bool = False):
    """The ``progress`` callback of a command: library events drawn with Rich on stderr, parameter names as flags.

    ``None`` when ``quiet`` (pass ``quiet=quiet`` too, and the library reports nothing).
    """
    if quiet:
        return None
    import transferkit as tk

    draw = tk.ConsoleRenderer()

    def render(event) -> None:
        draw(replace(event, message=as_flags(event.message)) if event.message else event)

    return render


def setup_logging(quiet: bool) -> None:
    """Send transferkit's logged warnings to stderr (one line each, parameter names as flags)."""

    class _CurrentStderr(logging.StreamHandler):
        # Resolve sys.stderr at each message, so in-process callers that swap it (tests, notebooks) see warnings.
        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, value):
            pass

    class _FlagFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return as_flags(super().format(record))

    # MLflow logs each schema migration of a new SQLite store at INFO; `train --tracker mlflow` reports the run itself
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    log = logging.getLogger("transferkit")
    if not any(getattr(h, "_transferkit", False) for h in log.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(_FlagFormatter("Warning: %(message)s"))
        handler._transferkit = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.ERROR if quiet else logging.WARNING)


def as_flags(message: str) -> str:
    """A library message as the CLI user reads it: backticked parameter names become the flags that set them
    (```top_k``` -> ``--top-k``); other backticked text loses its backticks."""
    flags = _flags(len(app.registered_commands))

    def sub(m: re.Match) -> str:
        word = m.group(1)
        return flags.get(word) or word

    return re.sub(r"`([A-Za-z_][A-Za-z0-9_]*)`", sub, message)


@lru_cache(maxsize=4)
def _flags(num_commands: int) -> dict[str, str]:
    """Parameter name -> long flag over every command (``top_k`` -> ``--top-k``); keyed by the number of commands
    so that commands registered later are seen."""
    import typer.main

    flags: dict[str, str] = {}
    group = typer.main.get_command(app)
    for cmd in getattr(group, "commands", {}).values():
        for param in cmd.params:
            for opt in getattr(param, "opts", ()):
                if opt.startswith("--"):
                    flags.setdefault(opt[2:].replace("-", "_"), opt)
    return flags


#: LanceDB's REST-namespace client, whose ``__init__`` imports its nine API modules: 0.5 s of the
#: 1.0 s ``transferkit search --id`` takes (and, on the store writer's thread, of an embedding run's), for a client only a remote namespace uses.
_DEFERRED_PACKAGE = "lance_namespace_urllib3_client"


def defer_lancedb_rest_client() -> None:
    """Register the REST client package without running its ``__init__`` until an attribute of it is read.

    A ``sys.modules`` edit, so it lives here, where the CLI owns its process, not in the
    library. Submodules LanceDB imports at start-up (``...client.models``) load as usual; the
    first attribute read from the package itself (a remote namespace's ``ApiClient``) runs
    ``__init__``. Where the package cannot be located that way, nothing changes.
    """
    import importlib.util
    import sys
    import threading

    name = _DEFERRED_PACKAGE
    if "lancedb" in sys.modules or name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    module = importlib.util.module_from_spec(spec)
    lock = threading.RLock()  # __init__ itself reads attributes of the package while it runs
    state = {"ran": False}

    def __getattr__(attr: str):
        with lock:
            if not state["ran"]:
                state["ran"] = True
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(name, None)  # the next import retries from scratch
                    raise
        if attr in module.__dict__:
            return module.__dict__[attr]
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    module.__getattr__ = __getattr__
    sys.modules[name] = module
