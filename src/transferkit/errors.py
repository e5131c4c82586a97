"""Exception hierarchy.

Every error a user can cause is a :class:`TransferKitError`. Each also subclasses the
matching built-in so that callers who catch ``ValueError`` or ``FileNotFoundError`` keep
working. The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``: 2 for
a usage, configuration or data mistake the user fixes by changing the call or the files, 1
for a runtime failure (weights that cannot be obtained, a damaged run or store). Anything
that is not a ``TransferKitError`` is a bug and keeps its traceback.

Messages name parameters as Python does, in backticks (```top_k` must be ...``), never as
CLI flags: a web app or a notebook shows them too. The CLI renders known parameter names
as its flags (``--top-k``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TransferKitError(Exception):
    """Base class of every error transferkit raises on purpose."""

    #: 1: a runtime failure; subclasses for the user's own mistakes use 2.
    exit_code = 1


class ConfigError(TransferKitError, ValueError):
    """A bad option value or combination of options."""

    exit_code = 2


class UnknownNameError(ConfigError, KeyError):
    """A name (model, strategy, ...) that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(TransferKitError, ValueError):
    """The dataset cannot be used: missing, empty, one class, ..."""

    exit_code = 2


class DataNotFoundError(DataError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class WeightsUnavailableError(TransferKitError, RuntimeError):
    """Pretrained weights could not be obtained (no network, no cache)."""


class UnsafeFileError(TransferKitError, ValueError):
    """A file would need unsafe deserialisation (arbitrary pickled code) to load."""

    exit_code = 2


class RunError(TransferKitError, ValueError):
    """A run directory is missing, not a run, or already holds a run (the user points elsewhere)."""

    exit_code = 2


class CorruptRunError(RunError):
    """A run directory's files are damaged, incomplete or incompatible."""

    exit_code = 1


class DistributedError(TransferKitError, RuntimeError):
    """A multi-process (torchrun) training job lost one of its processes."""


class StoreError(TransferKitError, ValueError):
    """An embedding store is missing, not a store, or cannot take what was asked (empty, unlabelled)."""

    exit_code = 2


class CorruptStoreError(StoreError):
    """An embedding store's files are damaged or of another format version."""

    exit_code = 1


class ModelMismatchError(StoreError):
    """Embeddings from a different model or preprocessing were about to be mixed."""


class ExportError(TransferKitError, RuntimeError):
    """An exported model does not reproduce the PyTorch model (its parity check failed), or could not be written."""


class MissingDependencyError(TransferKitError, ImportError):
    """An optional extra is not installed."""

    exit_code = 2


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
