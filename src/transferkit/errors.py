"""Exception hierarchy.

Every error a user can cause is a :class:`TransferKitError`. Each also subclasses the
matching built-in so that callers who catch ``ValueError`` or ``FileNotFoundError`` keep
working. The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``;
anything that is not a ``TransferKitError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TransferKitError(Exception):
    """Base class of every error transferkit raises on purpose."""

    exit_code = 2


class ConfigError(TransferKitError, ValueError):
    """A bad option value or combination of options."""


class UnknownNameError(ConfigError, KeyError):
    """A name (model, strategy, ...) that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(TransferKitError, ValueError):
    """The dataset cannot be used: missing, empty, one class, ..."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class WeightsUnavailableError(TransferKitError, RuntimeError):
    """Pretrained weights could not be obtained (no network, no cache)."""


class UnsafeFileError(TransferKitError, ValueError):
    """A file would need unsafe deserialisation (arbitrary pickled code) to load."""


class RunError(TransferKitError, ValueError):
    """A run directory is missing, incomplete, corrupt or incompatible."""


class StoreError(TransferKitError, ValueError):
    """An embedding store is missing, corrupt or incompatible."""


class ModelMismatchError(StoreError):
    """Embeddings from a different model or preprocessing were about to be mixed."""


class MissingDependencyError(TransferKitError, ImportError):
    """An optional extra is not installed."""


def close_matches(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ' Did you mean ...?' hint for a misspelt ``name`` (or '')."""
    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"


def unknown_name(kind: str, name: str, choices: Iterable[str], hint: str = "") -> UnknownNameError:
    """Build the standard error for an unregistered ``name`` of ``kind``."""
    choices = sorted(choices)
    msg = f"Unknown {kind} {name!r}.{close_matches(name, choices)} Choose from: {', '.join(choices)}."
    if hint:
        msg += " " + hint
    return UnknownNameError(msg)
