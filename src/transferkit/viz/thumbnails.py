"""Small inline thumbnails for the interactive plot and the run report."""

from __future__ import annotations

import base64
import io
import os


def make_thumbnail(image_path: str | os.PathLike, *, size: int = 64, quality: int = 75) -> str | None:
    """Return a ``data:image/jpeg;base64,...`` URI of a small thumbnail, or ``None`` if unreadable.

    The image is only opened for reading; any failure (missing, corrupt, not an image)
    gives ``None`` rather than an exception.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(image_path) as im:
            im.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale, much faster
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=quality, optimize=True)
    except Exception:  # noqa: BLE001 - a broken image must never break the plot
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
