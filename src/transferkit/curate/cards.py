"""Card pages of ranked images (label issues, outliers): a summary table, then sections of thumbnail cards.

The thumbnails and the atomic write are :mod:`.pages`' (the duplicates page's), so every page
opens offline and can be mailed; all text is HTML-escaped. Also the JSON file a report is written to.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import write_json_atomic
from ..errors import ConfigError
from . import pages

#: At most this many cards per section: each inlined thumbnail costs a few KB.
MAX_CARDS = 500
THUMB_SIZE = 128

_CSS = """
:root { --fg:#1f2328; --muted:#656d76; --line:#d0d7de; --bg:#f6f8fa; --bad:#cf222e; --ok:#1a7f37; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1200px; padding: 16px 32px 48px; line-height: 1.45; }
h1 { font-size: 24px; margin: 8px 0; } h2 { font-size: 19px; margin: 24px 0 6px; }
.note { color: var(--muted); font-size: 14px; margin: 4px 0 12px; }
table { border-collapse: collapse; font-size: 14px; margin: 8px 0; }
th, td { border: 1px solid var(--line); padding: 3px 10px; text-align: left; }
th { background: var(--bg); }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { width: 156px; font-size: 12px; border: 1px solid var(--line); border-radius: 6px; padding: 6px; overflow-wrap: anywhere; }
.card img, .card .noimg { width: 144px; height: 144px; object-fit: contain; background: var(--bg); display: block; }
.card .noimg { line-height: 144px; text-align: center; color: var(--muted); }
.card .rank { font-weight: 700; } .card .given { color: var(--bad); } .card .suggested { color: var(--ok); }
.card .muted { color: var(--muted); }
"""


@dataclass
class Card:
    """One image on a page: its file, a title line and detail lines (``(css class, text)``)."""

    path: str
    title: str
    lines: Sequence[tuple[str, str]] = field(default_factory=tuple)


@dataclass
class Section:
    """A titled list of cards with a note under the title; ``total`` is how many there were before the cut."""

    id: str
    title: str
    note: str
    cards: Sequence[Card]
    total: int | None = None


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _card(card: Card) -> str:
    uri = pages.thumbnail_uri(card.path, size=THUMB_SIZE) if card.path else None
    img = f'<img alt="{_esc(Path(card.path).name)}" src="{uri}">' if uri else '<div class="noimg">no image</div>'
    lines = "".join(f'<div class="{_esc(css)}">{_esc(text)}</div>' for css, text in card.lines)
    return (f'<div class="card" title="{_esc(card.path)}">{img}<div class="rank">{_esc(card.title)}</div>{lines}'
            f'<div class="muted">{_esc(Path(card.path).name)}</div></div>')


def render_page(*, title: str, summary: Mapping[str, Any], sections: Sequence[Section]) -> str:
    """The page as one HTML string (see the module docstring)."""
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in summary.items())
    parts = [f"<h1>{_esc(title)}</h1>", f"<table>{rows}</table>"]
    for sec in sections:
        total = len(sec.cards) if sec.total is None else sec.total
        shown = list(sec.cards)[:MAX_CARDS]
        cut = f" Showing the first {len(shown)} of {total}." if total > len(shown) else ""
        body = "".join(_card(c) for c in shown) or '<p class="note">None found.</p>'
        parts.append(f'<section id="{_esc(sec.id)}"><h2>{_esc(sec.title)} ({total})</h2>'
                     f'<p class="note">{_esc(sec.note)}{_esc(cut)}</p><div class="cards">{body}</div></section>')
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(parts) + "\n</body>\n</html>\n")


def write_page(path: str | os.PathLike, *, title: str, summary: Mapping[str, Any], sections: Sequence[Section]) -> Path:
    """Write :func:`render_page`'s page to ``path`` atomically; returns the path.

    Raises:
        ConfigError: ``path`` cannot be written.
    """
    path = Path(path)
    page = render_page(title=title, summary=summary, sections=sections)
    try:
        pages.write_page(page, path)
    except OSError as exc:
        raise ConfigError(f"Cannot write the page {path}: {exc.strerror or exc}. Pick a file in a folder you can write to.") from None
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically; returns the path.

    Raises:
        ConfigError: ``path`` cannot be written.
    """
    path = Path(path)
    try:
        write_json_atomic(path, obj)
    except OSError as exc:
        raise ConfigError(f"Cannot write {path}: {exc.strerror or exc}. Pick a file in a folder you can write to.") from None
    return path
