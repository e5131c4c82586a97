"""The incremental diff: which files of a folder a store must embed, refresh or drop."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._hashing import file_digest
from ..data.folders import ImageEntry

#: The store columns :func:`plan_embedding` compares.
PLAN_COLUMNS = ("id", "path", "relpath", "label", "split", "fingerprint", "size", "mtime")


@dataclass
class EmbedPlan:
    """What to do to make a store mirror a folder.

    Attributes:
        todo: entries to embed (new, changed, or unreadable now).
        refresh: ``(entry, stat, fingerprint)`` of rows whose bytes are unchanged but whose path,
            label, split or mtime changed: their metadata is rewritten, their vector kept.
        stale: ids of rows whose file is gone.
        unchanged: entries whose row is up to date.
        existing: ids the store held (an embedded ``todo`` entry among them is an update).
    """

    todo: list[ImageEntry] = field(default_factory=list)
    refresh: list[tuple[ImageEntry, os.stat_result, str]] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    unchanged: list[ImageEntry] = field(default_factory=list)
    existing: frozenset[str] = frozenset()

    def is_update(self, row_id: str) -> bool:
        return row_id in self.existing


def plan_embedding(entries: Sequence[ImageEntry], existing: Mapping[str, Mapping[str, Any]]) -> EmbedPlan:
    """Diff a folder's ``entries`` against a store's rows (``{id: row}`` with :data:`PLAN_COLUMNS`).

    Size + mtime decide first; a file whose size is the same but mtime differs is hashed, and
    kept (refreshed) when its digest is the stored fingerprint.
    """
    plan = EmbedPlan(existing=frozenset(existing))
    for e in entries:
        old = existing.get(e.id)
        if old is None:
            plan.todo.append(e)
            continue
        try:
            st = e.path.stat()
        except OSError:
            plan.todo.append(e)  # will be reported as unreadable
            continue
        same_place = old["path"] == str(e.path) and old["label"] == e.label and old["split"] == e.split
        if old["size"] == st.st_size and old["mtime"] == st.st_mtime_ns and same_place:
            plan.unchanged.append(e)
            continue
        if old["size"] == st.st_size:
            try:
                fp = file_digest(e.path)
            except OSError:
                plan.todo.append(e)
                continue
            if fp == old["fingerprint"]:
                plan.refresh.append((e, st, fp))
                continue
        plan.todo.append(e)
    seen = {e.id for e in entries}
    plan.stale = [i for i in existing if i not in seen]
    return plan
