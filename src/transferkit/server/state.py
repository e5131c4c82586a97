"""What the app keeps between requests: the newest store instance, the run, the query extractor, caches per store version."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import transferkit as tk

#: Values :meth:`ServerState.cached` keeps (least recently used dropped first).
MAX_CACHED = 24


class ServerState:
    """The store the app serves, followed as other processes write to it.

    Each request takes :meth:`store` once and reads only that instance, which stays at one
    committed version (:func:`transferkit.refresh_store`), so it never sees a half-written store.

    Args:
        store: an open store or its folder.
        run: a run folder (predicted labels), or None.
        settings: the pixel limit for uploads and thumbnails.
        refresh_interval: seconds between checks for newer commits (0: every request).
    """

    def __init__(self, store: Any, *, run: str | os.PathLike | None = None, settings: tk.Settings | None = None,
                 refresh_interval: float = 0.5):
        self._store = store if isinstance(store, tk.EmbeddingStore) else tk.EmbeddingStore.open(store)
        self.run = tk.load_run(run) if run is not None else None
        self.settings = settings if settings is not None else tk.Settings.from_env()
        self.refresh_interval = float(refresh_interval)
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self._extractor = None
        self._extractor_lock = threading.Lock()
        self.embed_lock = threading.Lock()  # one query image through the model at a time
        self._per_version: OrderedDict[str, tuple[int, Any]] = OrderedDict()

    @property
    def path(self) -> Path:
        return self._store.path

    def store(self) -> tk.EmbeddingStore:
        """The newest committed store instance (checked at most every ``refresh_interval`` seconds)."""
        now = time.monotonic()
        if now - self._checked >= self.refresh_interval:
            with self._lock:
                if now - self._checked >= self.refresh_interval:
                    self._store = tk.refresh_store(self._store)
                    self._checked = time.monotonic()
        return self._store

    def extractor(self, store: tk.EmbeddingStore):
        """The store's model, rebuilt once, to embed uploaded query images."""
        with self._extractor_lock:
            if self._extractor is None:
                self._extractor = tk.Extractor.from_store(store)
            return self._extractor

    def cached(self, name: str, store: tk.EmbeddingStore, make):
        """``make()``, computed once per store version under ``name``."""
        version = int(store.snapshot()["version"])
        hit = self._per_version.get(name)
        if hit is None or hit[0] != version:
            hit = (version, make())
            self._per_version[name] = hit
            while len(self._per_version) > MAX_CACHED:  # each map limit asked for is an entry (12 MB at 1M points)
                self._per_version.popitem(last=False)
        self._per_version.move_to_end(name)
        return hit[1]

    def label_counts(self, store: tk.EmbeddingStore) -> dict[str, int]:
        """``{label: count}`` sorted by label ("" = unlabelled)."""
        def make():
            counts = Counter(str(x) for x in store.snapshot()["label"].tolist())
            return dict(sorted(counts.items()))
        return self.cached("labels", store, make)

    def positions(self, store: tk.EmbeddingStore) -> dict[str, int]:
        """``{id: row position}`` in the store's snapshot."""
        return self.cached("positions", store, lambda: {str(i): p for p, i in enumerate(store.snapshot()["id"].tolist())})

    def predictions(self, store: tk.EmbeddingStore) -> dict[str, dict[str, Any]] | None:
        """``{id: {"label", "confidence"}}`` from the run (None without one), cached per store version."""
        if self.run is None:
            return None
        return self.cached("predictions", store, lambda: tk.predict_store(self.run, store, num_workers=0,
                                                                                    settings=self.settings))

    def label_names(self, store: tk.EmbeddingStore) -> list[str]:
        """The names the ``label`` and ``predicted`` indices of ``/api/points`` refer to: the store's labels and the run's classes."""
        names = set(self.label_counts(store))
        if self.run is not None:
            names |= set(self.run.classes)
        return sorted(names)

    def search_mode(self, store: tk.EmbeddingStore, *, exact: bool, label: str | None) -> str:
        """"ann" when the store's up-to-date index answers this search, else "exact" (the rule of :meth:`EmbeddingStore.search`)."""
        if exact or label is not None:
            return "exact"
        return "ann" if store.ann_index(version=int(store.snapshot()["version"])) is not None else "exact"
