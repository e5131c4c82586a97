"""Where a store lives: a local folder, or a URI that Lance and ``pyarrow.fs`` both read (s3://, gs://, az://, file://).

The table goes wherever Lance puts it; the small metadata file is read and written through
``pyarrow.fs``, so both halves of a store follow the same URI. Files derived from a store
(its ANN index, map projections, locks) need a local folder (faiss memory-maps its index):
for a store at a URI they live in a cache folder named after the URI (:attr:`StoreLocation.local`).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_uri(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` is a URI (``scheme://...``) rather than a local path."""
    return isinstance(spec, str) and bool(_SCHEME.match(spec))


class StoreLocation:
    """A store's folder: ``uri`` (what to open it by) and ``local`` (the folder for derived files).

    Args:
        spec: a local path, or a URI.
        cache_dir: the cache folder for a URI's derived files (default: the package's cache folder).
    """

    def __init__(self, spec: str | os.PathLike, *, cache_dir: Path | None = None):
        self.remote = is_uri(spec)
        if not self.remote:
            self.local = Path(spec)
            self.uri = str(self.local)
            self._fs = None
            return
        import pyarrow.fs as pafs

        self.uri = str(spec).rstrip("/")
        self._fs, self._root = pafs.FileSystem.from_uri(self.uri)
        if cache_dir is None:
            from ..config import Settings

            cache_dir = Settings.from_env().cache_dir
        self.local = Path(cache_dir) / "remote-stores" / hashlib.blake2b(self.uri.encode(), digest_size=8).hexdigest()

    def __str__(self) -> str:
        return self.uri

    def _kind(self, name: str | None = None):
        """The ``pyarrow.fs.FileType`` of the folder, or of the file ``name`` in it (at a URI)."""
        return self._fs.get_file_info(self._root if name is None else f"{self._root}/{name}").type

    def exists(self) -> bool:
        """Whether the folder (or, at a URI, any object under it) exists."""
        import pyarrow.fs as pafs

        return self.local.exists() if not self.remote else self._kind() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        import pyarrow.fs as pafs

        return self.local.is_file() if not self.remote else self._kind() == pafs.FileType.File

    def is_empty(self) -> bool:
        """Whether the folder holds nothing (a missing folder is empty)."""
        if not self.remote:
            return not self.local.exists() or not any(self.local.iterdir())
        import pyarrow.fs as pafs

        return not self.exists() or not self._fs.get_file_info(pafs.FileSelector(self._root, allow_not_found=True))

    def has(self, name: str) -> bool:
        """Whether the file ``name`` exists in the folder."""
        import pyarrow.fs as pafs

        return (self.local / name).exists() if not self.remote else self._kind(name) == pafs.FileType.File

    def read_text(self, name: str) -> str:
        if not self.remote:
            return (self.local / name).read_text(encoding="utf-8")
        with self._fs.open_input_stream(f"{self._root}/{name}") as f:
            return f.read().decode("utf-8")

    def write_text(self, name: str, text: str) -> None:
        """Write the file ``name``: atomically by rename locally; at a URI one upload (object stores publish an
        object whole, so a reader never sees half of it)."""
        if not self.remote:
            from .._io import write_text_atomic

            self.local.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.local / name, text)
            return
        self._fs.create_dir(self._root, recursive=True)
        with self._fs.open_output_stream(f"{self._root}/{name}") as f:
            f.write(text.encode("utf-8"))

    def join(self, name: str) -> str:
        """The URI (or path) of ``name`` in the folder."""
        return f"{self.uri}/{name}" if self.remote else str(self.local / name)
