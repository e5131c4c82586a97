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

    log = logging.getLogger("transferkit")
    if not any(getattr(h, "_transferkit", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("Warning: %(message)s"))
        handler._transferkit = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.ERROR if quiet else logging.WARNING)
