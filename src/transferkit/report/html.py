"""The run report: one self-contained HTML file (every image inline, no external URLs).

Sections, each with a stable ``id`` so tests and links can find them: ``dataset``,
``strategy``, ``training``, ``metrics``, ``embedding``, ``retrieval``, ``gallery``,
``curation`` and ``timings``. A section whose data is missing says "not available" instead of failing, so a
partial run still gets a report. All text is HTML-escaped.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._io import write_text_atomic
from . import sections as _s
from .curation import curation_section

SECTIONS = ("dataset", "strategy", "training", "metrics", "embedding", "retrieval", "gallery", "curation", "timings")
_SECTION_TITLES = {
    "dataset": "Dataset",
    "strategy": "Strategy",
    "training": "Training",
    "metrics": "Test metrics",
    "embedding": "Embedding space",
    "retrieval": "Retrieval",
    "gallery": "Search examples",
    "curation": "Label issues and outliers",
    "timings": "Timings",
}

_CSS = """
:root { --fg:#1f2328; --muted:#656d76; --line:#d0d7de; --bg:#f6f8fa; --ok:#1a7f37; --bad:#cf222e; --accent:#0969da; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--fg);
       margin: 0; line-height: 1.5; }
header { background: var(--bg); border-bottom: 1px solid var(--line); padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 24px; }
header .sub { color: var(--muted); font-size: 13px; }
nav { margin-top: 8px; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; }
main { max-width: 1100px; margin: 0 auto; padding: 8px 32px 48px; }
section { border-bottom: 1px solid var(--line); padding: 12px 0 20px; }
h2 { font-size: 20px; margin: 12px 0; }
h3 { font-size: 16px; margin: 16px 0 8px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.plot { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
.plots figure { margin: 0; flex: 1 1 460px; }
figcaption { color: var(--muted); font-size: 13px; }
.na { color: var(--muted); font-style: italic; }
.big { font-size: 28px; font-weight: 600; margin: 4px 0; }
.evidence { background: var(--bg); border-left: 3px solid var(--accent); padding: 8px 12px; margin: 8px 0; }
.query { display: flex; gap: 12px; align-items: flex-start; padding: 10px 0; border-top: 1px dashed var(--line); }
.card { width: 120px; font-size: 12px; text-align: center; word-break: break-all; }
.card img, .card .noimg { width: 96px; height: 96px; object-fit: contain; background: var(--bg); border: 1px solid var(--line);
                          border-radius: 4px; display: block; margin: 0 auto 4px; }
.card .noimg { line-height: 96px; color: var(--muted); }
.card.q { border-right: 2px solid var(--line); padding-right: 12px; }
.ok { color: var(--ok); font-weight: 700; }
.bad { color: var(--bad); font-weight: 700; }
.muted { color: var(--muted); }
"""



def write_report(
    path: str | os.PathLike,
    *,
    title: str,
    dataset: Mapping[str, Any] | None,
    strategy: Mapping[str, Any] | None,
    history: Sequence[Mapping[str, Any]] | None,
    metrics: Mapping[str, Any] | None,
    confusion_png: str | os.PathLike | None,
    plots: Mapping[str, str | os.PathLike] | None,
    retrieval: Mapping[str, Any] | None,
    gallery: Sequence[Mapping[str, Any]] | None,
    timings: Mapping[str, Any] | None = None,
    curation: Mapping[str, Any] | None = None,
) -> Path:
    """Write the run report as one self-contained HTML file.

    Args:
        path: output ``.html`` file; written atomically.
        title: report title.
        dataset: ``{"classes": [...], "counts": {split: {class: n}} or {split: n},
            "skipped": [{"path", "reason"}] or [path] or int, ...other details}``.
        strategy: ``{"decision" (or "name"): str, "evidence" (or "reason"): str | list | dict, ...}``.
        history: one row per epoch with ``epoch, train_loss, val_loss, val_accuracy, seconds``.
        metrics: ``{"accuracy": float, "per_class": {class: {precision, recall, f1, support}}, ...}``.
        confusion_png: image from :func:`~.figures.plot_confusion_matrix`, inlined.
        plots: ``{caption: png path}`` of embedding projections, inlined.
        retrieval: ``{"p_at_1", "p_at_5", "p_at_10", "map_at_10", "index_recall"?, ...}``.
        gallery: ``[{"query_path", "query_label", "results": [{"path", "label", "score", "correct"}]}]``;
            thumbnails are inlined, the top 5 results shown with a check or cross mark.
        timings: ``{step: seconds}``.
        curation: ``{"label_issues": ..., "outliers": ...}`` (see :func:`~.curation.curation_section`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Any argument may be ``None`` or empty; its section then says "not available".
    """
    bodies = {
        "dataset": _s.dataset_section(dataset),
        "strategy": _s.strategy_section(strategy),
        "training": _s.training_section(history),
        "metrics": _s.metrics_section(metrics, confusion_png),
        "embedding": _s.embedding_section(plots),
        "retrieval": _s.retrieval_section(retrieval),
        "gallery": _s.gallery_section(gallery),
        "curation": curation_section(curation),
        "timings": _s.timings_section(timings),
    }
    nav = "".join(f'<a href="#{sid}">{_s.escape(_SECTION_TITLES[sid])}</a>' for sid in SECTIONS)
    sections = "\n".join(f'<section id="{sid}">\n<h2>{_s.escape(_SECTION_TITLES[sid])}</h2>\n{bodies[sid]}\n</section>' for sid in SECTIONS)
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_s.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>{_s.escape(title)}</h1><div class="sub">Generated {_s.escape(stamp)} by transferkit</div><nav>{nav}</nav></header>\n'
        f"<main>\n{sections}\n</main>\n</body>\n</html>\n"
    )
    path = Path(path)
    write_text_atomic(path, page)
    return path
