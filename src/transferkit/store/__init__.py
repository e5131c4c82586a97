"""The embedding store (LanceDB), its approximate index, search and retrieval evaluation.

``store`` (the :class:`EmbeddingStore`) imports ``search`` and ``index``; those, and
``evaluate``, take any store-like object and never import ``store``. ``query`` is the one
function front ends call to search by vector, id or image.
"""
