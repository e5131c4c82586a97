"""The report's sections as HTML fragments; each says "not available" when its data is missing."""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..viz.thumbnails import make_thumbnail
from .figures import as_float, history_png

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml", ".webp": "image/webp"}
_RETRIEVAL_METRICS = (
    ("p_at_1", "Precision@1"),
    ("p_at_5", "Precision@5"),
    ("p_at_10", "Precision@10"),
    ("map_at_10", "mAP@10"),
    ("index_recall", "ANN index recall (vs exact search)"),
)
NA = '<p class="na">Not available.</p>'


def escape(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return escape(value if value is not None else "-")
    if isinstance(value, int):
        return f"{value:,}"
    f = as_float(value)
    if f is None:
        return escape(value)
    if math.isnan(f):
        return "-"
    return f"{f:.{digits}f}"


def _is_num(value: Any) -> bool:
    return not isinstance(value, bool) and as_float(value) is not None and not isinstance(value, str)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _inline_image(path: str | os.PathLike | None, alt: str, *, css: str = "plot") -> str:
    """An ``<img>`` with the file inlined as a data URI, or a "not available" note."""
    if path is None:
        return NA
    p = Path(path)
    mime = _MIME.get(p.suffix.lower())
    if mime is None:
        return f'<p class="na">Not available: {escape(p.name)} is not an image.</p>'
    try:
        data = p.read_bytes()
    except OSError:
        return f'<p class="na">Not available: {escape(p)} could not be read.</p>'
    return f'<img class="{css}" alt="{escape(alt)}" src="{_data_uri(data, mime)}">'


def _kv_table(items: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{_fmt(v) if _is_num(v) else escape(_plain(v))}</td></tr>" for k, v in items.items())
    return f"<table>{rows}</table>" if rows else ""


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return "" if value is None else str(value)


def _thumb(path: Any, size: int = 96) -> str:
    uri = make_thumbnail(path, size=size) if path else None
    if uri is None:
        return '<div class="noimg">no image</div>'
    return f'<img alt="{escape(Path(str(path)).name)}" src="{uri}">'


def dataset_section(dataset: Mapping[str, Any] | None) -> str:
    if not dataset:
        return NA
    parts: list[str] = []
    classes = list(dataset.get("classes") or [])
    counts = dataset.get("counts") or {}
    if classes:
        parts.append(f"<p>{len(classes)} classes: {escape(', '.join(map(str, classes)))}</p>")
    if counts:
        splits = list(counts)
        if all(isinstance(v, Mapping) for v in counts.values()):
            names = classes or sorted({c for v in counts.values() for c in v})
            head = "".join(f"<th>{escape(s)}</th>" for s in splits)
            body = ""
            for c in names:
                cells = "".join(f'<td class="num">{_fmt(counts[s].get(c, 0))}</td>' for s in splits)
                body += f"<tr><th>{escape(c)}</th>{cells}</tr>"
            totals = "".join(f'<td class="num"><b>{_fmt(sum(int(v) for v in counts[s].values()))}</b></td>' for s in splits)
            parts.append(f"<h3>Images per split</h3><table><tr><th>class</th>{head}</tr>{body}<tr><th>total</th>{totals}</tr></table>")
        else:
            parts.append("<h3>Images per split</h3>" + _kv_table(counts))
    skipped = dataset.get("skipped")
    parts.append("<h3>Skipped files</h3>")
    if not skipped:
        parts.append('<p class="muted">None.</p>')
    elif isinstance(skipped, int | float):
        parts.append(f"<p>{_fmt(int(skipped))} files skipped.</p>")
    else:
        items = list(skipped.items()) if isinstance(skipped, Mapping) else list(skipped)
        rows = []
        for item in items[:200]:
            if isinstance(item, Mapping):
                rows.append(f"<tr><td>{escape(item.get('path', ''))}</td><td>{escape(item.get('reason', ''))}</td></tr>")
            elif isinstance(item, tuple) and len(item) == 2:
                rows.append(f"<tr><td>{escape(item[0])}</td><td>{escape(item[1])}</td></tr>")
            else:
                rows.append(f"<tr><td>{escape(item)}</td><td></td></tr>")
        more = f'<p class="muted">... and {len(items) - 200} more.</p>' if len(items) > 200 else ""
        parts.append(f"<p>{len(items)} files skipped.</p><table><tr><th>file</th><th>reason</th></tr>{''.join(rows)}</table>{more}")
    other = {k: v for k, v in dataset.items() if k not in ("classes", "counts", "skipped")}
    if other:
        parts.append("<h3>Details</h3>" + _kv_table(other))
    return "\n".join(parts)


def strategy_section(strategy: Mapping[str, Any] | None) -> str:
    if not strategy:
        return NA
    decision = strategy.get("decision", strategy.get("name"))
    parts = []
    if decision is not None:
        parts.append(f'<p class="big">{escape(decision)}</p>')
    evidence = strategy.get("evidence", strategy.get("reason"))
    if evidence:
        if isinstance(evidence, str):
            parts.append(f'<div class="evidence">{escape(evidence)}</div>')
        else:
            items = evidence.items() if isinstance(evidence, Mapping) else ((None, v) for v in evidence)
            lis = "".join(f"<li>{'<b>' + escape(k) + ':</b> ' if k is not None else ''}{escape(v)}</li>" for k, v in items)
            parts.append(f'<div class="evidence"><ul>{lis}</ul></div>')
    other = {k: v for k, v in strategy.items() if k not in ("decision", "name", "evidence", "reason")}
    if other:
        parts.append(_kv_table(other))
    return "\n".join(parts) or NA


def training_section(history: Sequence[Mapping[str, Any]] | None) -> str:
    rows = list(history or [])
    if not rows:
        return NA
    parts = [f'<img class="plot" alt="training curves" src="{_data_uri(history_png(rows), "image/png")}">']
    cols = ["epoch", "train_loss", "val_loss", "val_accuracy", "seconds"]
    cols += [k for k in dict.fromkeys(k for r in rows for k in r) if k not in cols]
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f'<td class="num">{_fmt(r.get(c), 4 if c != "seconds" else 1)}</td>' for c in cols) + "</tr>" for r in rows)
    parts.append(f"<table><tr>{head}</tr>{body}</table>")
    return "\n".join(parts)


def metrics_section(metrics: Mapping[str, Any] | None, confusion_png: str | os.PathLike | None) -> str:
    if not metrics and confusion_png is None:
        return NA
    metrics = dict(metrics or {})
    parts = []
    if metrics.get("accuracy") is not None:
        parts.append(f'<p>Accuracy</p><p class="big">{_fmt(metrics["accuracy"])}</p>')
    per_class = metrics.get("per_class") or {}
    if per_class:
        body = ""
        for name, m in per_class.items():
            cells = "".join(f'<td class="num">{_fmt(m.get(k))}</td>' for k in ("precision", "recall", "f1"))
            support = m.get("support")
            body += f'<tr><th>{escape(name)}</th>{cells}<td class="num">{_fmt(int(support)) if support is not None else "-"}</td></tr>'
        parts.append(
            "<h3>Per class</h3><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
            f"{body}</table>"
        )
    other = {k: v for k, v in metrics.items() if k not in ("accuracy", "per_class", "confusion_matrix", "classes") and not isinstance(v, Mapping | list)}
    if other:
        parts.append(_kv_table(other))
    parts.append("<h3>Confusion matrix</h3>" + _inline_image(confusion_png, "confusion matrix"))
    return "\n".join(parts)


def embedding_section(plots: Mapping[str, str | os.PathLike] | None) -> str:
    if not plots:
        return NA
    figs = "".join(f"<figure>{_inline_image(p, name)}<figcaption>{escape(name)}</figcaption></figure>" for name, p in plots.items())
    return f'<div class="plots">{figs}</div>'


def retrieval_section(retrieval: Mapping[str, Any] | None) -> str:
    if not retrieval:
        return NA
    rows = "".join(
        f'<tr><th>{escape(label)}</th><td class="num">{_fmt(retrieval[key])}</td></tr>'
        for key, label in _RETRIEVAL_METRICS
        if retrieval.get(key) is not None
    )
    known = {k for k, _ in _RETRIEVAL_METRICS}
    other = {k: v for k, v in retrieval.items() if k not in known}
    table = f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>" if rows else ""
    return (table + (_kv_table(other) if other else "")) or NA


def gallery_section(gallery: Sequence[Mapping[str, Any]] | None) -> str:
    if not gallery:
        return NA
    blocks = []
    for entry in gallery:
        qlabel = entry.get("query_label")
        qpath = entry.get("query_path")
        cards = [
            f'<div class="card q">{_thumb(qpath)}<b>query</b><br>{escape(qlabel)}<br><span class="muted">{escape(Path(str(qpath)).name if qpath else "")}</span></div>'
        ]
        for rank, r in enumerate(list(entry.get("results") or [])[:5], start=1):
            correct = r.get("correct")
            if correct is None:
                correct = r.get("label") == qlabel
            mark = '<span class="ok" title="same label">&#10003;</span>' if correct else '<span class="bad" title="different label">&#10007;</span>'
            cards.append(
                f'<div class="card">{_thumb(r.get("path"))}#{rank} {mark} {escape(r.get("label"))}<br>'
                f'<span class="muted">sim {_fmt(r.get("score"), 3)}</span></div>'
            )
        if len(cards) == 1:
            cards.append('<p class="na">No results.</p>')
        blocks.append(f'<div class="query">{"".join(cards)}</div>')
    return "\n".join(blocks)


def timings_section(timings: Mapping[str, Any] | None) -> str:
    if not timings:
        return NA
    rows = "".join(f'<tr><th>{escape(k)}</th><td class="num">{_fmt(v, 1)}</td></tr>' for k, v in timings.items())
    return f"<table><tr><th>step</th><th>seconds</th></tr>{rows}</table>"
