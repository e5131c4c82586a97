"""Thumbnails of stored images (JPEG, long side <= 256 px), cached in memory and in the store folder."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from pathlib import Path

import transferkit as tk

from .limits import THUMBNAIL_SIZE

THUMBNAILS_DIR = "thumbnails"


class ThumbnailCache:
    """JPEG thumbnails by (id, file fingerprint): in an LRU of ``capacity`` entries, then on disk under ``<store>/thumbnails``."""

    def __init__(self, store_path: Path, *, capacity: int = 2048, size: int = THUMBNAIL_SIZE):
        self.folder = Path(store_path) / THUMBNAILS_DIR
        self.capacity = capacity
        self.size = size
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(row: dict) -> str:
        return hashlib.blake2b(f"{row['id']}\0{row.get('fingerprint', '')}".encode(), digest_size=16).hexdigest()

    def get(self, row: dict, file: Path, *, max_pixels: int | None) -> bytes | None:
        """The thumbnail of ``row`` (whose checked file is ``file``), or None when the file cannot be decoded."""
        key = self.key(row)
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        disk = self.folder / f"{key}.jpg"
        try:
            data = disk.read_bytes()
        except OSError:
            data = _render(file, self.size, max_pixels)
            if data is None:
                return None
            _write(disk, data)
        with self._lock:
            self._memory[key] = data
            while len(self._memory) > self.capacity:
                self._memory.popitem(last=False)
        return data


def _render(file: Path, size: int, max_pixels: int | None) -> bytes | None:
    try:
        im = tk.load_image(file, max_pixels=max_pixels, draft_size=size)
    except Exception:  # noqa: BLE001 - an unreadable file has no thumbnail
        return None
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=82)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:  # a read-only store: memory only
        pass
