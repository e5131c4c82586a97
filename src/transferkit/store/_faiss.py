"""``import faiss`` on first use, with the install hint when it is missing."""

from __future__ import annotations

from ..errors import MissingDependencyError


def load():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MissingDependencyError("The approximate index needs faiss. Install it with `pip install faiss-cpu`.") from exc
    return faiss
