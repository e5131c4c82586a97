"""One embedding job at a time per store: an advisory lock file, held from the plan to the last commit.

Two jobs that plan against the same version and both add a new file would each insert its row
(Lance accepts an append beside another append, and LanceDB's merge-insert of an unseen id
inserts it): the id would be in the table twice. The lock makes the second job stop at once with
a message instead. Object storage has no such lock; there, run one job per store at a time.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import StoreError

LOCK_NAME = ".writer.lock"


class WriterLock:
    """The held lock of ``store`` (nothing for a store at a URI, or where ``fcntl`` is missing); :meth:`release` it."""

    def __init__(self, store: Any):
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        if store.location.remote:
            return
        store.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(store.path / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(f"Another job is writing to the embedding store {store.uri} right now. Wait for it to "
                             f"finish, then run this again (it embeds only what is still missing).") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
