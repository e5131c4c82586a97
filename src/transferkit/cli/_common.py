"""Small helpers shared by the command modules."""

from __future__ import annotations

import json
import sys
from typing import Any


def print_json(obj: Any) -> None:
    from .._io import _json_default

    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")


def console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def setup_logging(quiet: bool) -> None:
    """Send transferkit warnings to stderr (one line each)."""
    import logging

    class _CurrentStderr(logging.StreamHandler):
        # Resolve sys.stderr at each message, so in-process callers that swap it (tests, notebooks) see warnings.
        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, value):
            pass

    log = logging.getLogger("transferkit")
    if not any(getattr(h, "_transferkit", False) for h in log.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("Warning: %(message)s"))
        handler._transferkit = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.ERROR if quiet else logging.WARNING)
