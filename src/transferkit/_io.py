"""Atomic file writes: write to a temporary file in the same folder, flush, fsync, rename."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    A crash or kill at any moment leaves either the old file or the new one, never a
    partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


#: The names :func:`atomic_path` gives its temporary files: ``.<name>.<8 random characters>.tmp``.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers killed mid-write (SIGKILL, power loss) left in ``folder``.

    Only for a folder no live process writes to (a run being resumed): a live writer's
    temporary file has the same name pattern. Returns the files removed.
    """
    removed = []
    for p in Path(folder).glob(".*.tmp"):
        if _TEMP_NAME.match(p.name) and p.is_file():
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def json_text(obj: Any) -> str:
    """``obj`` as the indented JSON text every transferkit file uses (paths and numpy values converted)."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json_text(obj))


def _json_default(o: Any):
    if isinstance(o, Path):
        return str(o)
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class UnreadableFileError(Exception):
    """A file that cannot be deserialised (internal; callers turn it into their own message)."""


def torch_load_tensors(path: str | os.PathLike, *, remedy: str):
    """``torch.load(weights_only=True)``: never runs pickled code.

    Raises:
        UnsafeFileError: the file holds pickled objects that could execute code (``remedy``
            is appended to the message).
        UnreadableFileError: any other failure (corrupt, truncated, not a torch file), with
            the first line of torch's message.
    """
    import torch

    from .errors import UnsafeFileError

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure here is a bad file
        text = str(exc).strip()
        # torch says "Weights only load failed" for any unpickling error; only a refused
        # GLOBAL (a class or function the pickle wants to import) means executable content.
        if "Unsupported global" in text or "GLOBAL" in text:
            raise UnsafeFileError(f"Refused to load {path}: it contains pickled Python objects that could run code. {remedy}") from None
        raise UnreadableFileError(text.splitlines()[0][:160] if text else type(exc).__name__) from None


def read_json_object(path: str | os.PathLike, *, error: type[Exception], what: str, remedy: str) -> dict[str, Any]:
    """Read a JSON file that must hold an object; any failure raises ``error`` naming ``what`` and the ``remedy``."""
    return parse_json_object(lambda: Path(path).read_text(encoding="utf-8"), str(path), error=error, what=what, remedy=remedy)


def parse_json_object(read: Callable[[], str], where: str, *, error: type[Exception], what: str,
                      remedy: str) -> dict[str, Any]:
    """The JSON object that ``read()`` returns the text of; any failure raises ``error`` naming ``where``."""
    try:
        obj = json.loads(read())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"Corrupt {what} {where}: {exc}. {remedy}") from None
    if not isinstance(obj, dict):
        raise error(f"Corrupt {what} {where}: expected a JSON object. {remedy}")
    return obj
