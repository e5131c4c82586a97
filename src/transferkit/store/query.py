"""The one query function every front end calls (CLI, pipeline result, a server, a cluster job):
search a store by vector, by stored id or by image."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, DataNotFoundError
from .search import check_top_k
from .store import EmbeddingStore


def search_store(store: EmbeddingStore | str | os.PathLike, *, vector=None, id: str | None = None, image=None,
                 top_k: int = 5, label: str | None = None, split: str | None = None, exact: bool = False,
                 extractor: Any = None) -> list[dict[str, Any]]:
    """The ``top_k`` images of ``store`` most cosine-similar to one query.

    Pass exactly one query:

    - ``vector``: an embedding of the store's dimension (need not be normalised);
    - ``id``: a stored row's id; that row is the query and is left out of the results;
    - ``image``: an image file path or a PIL image, embedded with the store's own model and
      preprocessing (or with ``extractor``, which must be the store's model).

    Args:
        store: an open :class:`EmbeddingStore` or its folder.
        top_k: number of results.
        label, split: only results with this label / from this split (exact search).
        exact: exact search even if an approximate index exists.
        extractor: an :class:`~transferkit.Extractor` to embed ``image`` with, when one is
            already loaded; default: rebuilt from the store's metadata.

    Returns:
        dicts with ``rank`` (1-based), ``score`` (cosine similarity), ``id``, ``path``,
        ``relpath``, ``label``, ``split``, best first.

    Raises:
        ConfigError: not exactly one query, ``top_k`` < 1, an unknown ``id``, a bad vector.
        DataNotFoundError, DataError: the query image is missing or cannot be read.
        StoreError: the store cannot be opened, or records no model to embed ``image`` with.
        ModelMismatchError: ``extractor`` is not the store's model.
    """
    given = [name for name, value in (("vector", vector), ("id", id), ("image", image)) if value is not None]
    if len(given) != 1:
        raise ConfigError(f"Pass exactly one query: `vector`, `id` or `image`; got {', '.join(given) or 'none'}.")
    top_k = check_top_k(top_k)
    if not isinstance(store, EmbeddingStore):
        store = EmbeddingStore.open(store)
    exclude: list[str] = []
    if id is not None:
        row = store.get(str(id))
        if row is None:
            raise ConfigError(f"No embedding with id {id!r} in {store.path}. Ids are the 'id' of each search result.")
        vector, exclude = row["vector"], [str(id)]
    elif image is not None:
        vector = embed_query(store, image, extractor=extractor)
    return store.search(np.asarray(vector, dtype=np.float32), top_k, label=label, split=split, exact=exact,
                        exclude_ids=exclude)


def embed_query(store: EmbeddingStore, image, *, extractor: Any = None) -> np.ndarray:
    """The normalised embedding of a query ``image`` (a path or a PIL image), made as the store's vectors were.

    Without ``extractor``, the store's model is rebuilt with its recorded backend, precision and
    resize kernel (:meth:`~transferkit.Extractor.from_store`).
    """
    if extractor is None:
        from ..embed.extractor import Extractor

        extractor = Extractor.from_store(store)
    else:
        store.check_model(extractor.model_id)
    if isinstance(image, str | os.PathLike):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise DataNotFoundError(f"Query image not found: {path}.")
        vectors, ok, reasons = extractor.embed_files([path], batch_size=1)
        if not ok[0]:
            raise DataError(f"Cannot read query image {path}: {reasons.get(0, 'unreadable')}.")
        return vectors[0]
    if not callable(getattr(image, "convert", None)):
        raise ConfigError(f"`image` must be an image file path or a PIL image; got {type(image).__name__}.")
    return extractor.embed_images([image])[0]

