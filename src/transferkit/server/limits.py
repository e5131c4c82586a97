"""The limits the server enforces and announces in ``/api/info``."""

MAX_K = 100
MAX_UPLOAD_BYTES = 20_000_000
MAX_POINTS = 1_000_000
#: Neighbours listed by ``/api/items/{id}``.
ITEM_NEIGHBOURS = 8
#: Long side of a thumbnail, in pixels.
THUMBNAIL_SIZE = 256
