"""Self-contained HTML pages of curation results: thumbnails inline as data URIs, no network, no scripts."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

from .._io import write_text_atomic

#: Longest side of a thumbnail, in pixels.
THUMB_SIZE = 160


def thumbnail_uri(path: str | os.PathLike, *, size: int = THUMB_SIZE) -> str | None:
    """A ``data:image/jpeg;base64,...`` thumbnail of the image at ``path``, or None where it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="JPEG", quality=80)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def duplicates_html(report, *, title: str = "Duplicate images") -> str:
    """The page of a :class:`~transferkit.curate.duplicates.DuplicateReport`: one row of thumbnails per group, the kept copy first."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>",
             "body{font-family:sans-serif;margin:1em}.g{border:1px solid #ccc;margin:.5em 0;padding:.5em}",
             "figure{display:inline-block;margin:.3em;width:170px;vertical-align:top;font-size:11px;word-break:break-all}",
             ".keep{outline:3px solid #2a2}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p>{len(report.groups)} groups, {report.num_removable} removable images "
             f"of {report.num_images} (candidates at cosine &gt;= {report.threshold}, confirmed by thumbnails &gt;= "
             f"{report.extra.get('pixel_threshold')}).</p>"]
    for n, g in enumerate(report.groups, 1):
        parts.append(f"<div class='g'><b>Group {n}</b> ({g.kind}, lowest cosine to the kept image {g.min_similarity:.4f})<br>")
        for i, (id_, path) in enumerate(zip(g.ids, g.paths)):
            uri = thumbnail_uri(path)
            img = f"<img src='{uri}' alt=''>" if uri else "<i>(unreadable)</i>"
            tag = "keep" if i == 0 else "remove"
            parts.append(f"<figure class='{'keep' if i == 0 else ''}'>{img}<figcaption>{tag}: "
                         f"{html.escape(path or id_)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)


def write_page(text: str, out: str | os.PathLike) -> Path:
    """Write ``text`` to ``out`` atomically; returns the path."""
    out = Path(out)
    write_text_atomic(out, text)
    return out
