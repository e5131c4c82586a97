"""The run report: one self-contained HTML file (every image inline, no external URLs).

Sections, each with a stable ``id`` so tests and links can find them: ``dataset``,
``strategy``, ``training``, ``metrics``, ``embedding``, ``retrieval``, ``gallery`` and
``timings``. A section whose data is missing says "not available" instead of failing, so a
partial run still gets a report. All text is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_path, write_text_atomic

SECTIONS = ("dataset", "strategy", "training", "metrics", "embedding", "retrieval", "gallery", "timings")
_SECTION_TITLES = {
    "dataset": "Dataset",
    "strategy": "Strategy",
    "training": "Training",
    "metrics": "Test metrics",
    "embedding": "Embedding space",
    "retrieval": "Retrieval",
    "gallery": "Search examples",
    "timings": "Timings",
}
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml", ".webp": "image/webp"}
_RETRIEVAL_METRICS = (
    ("p_at_1", "Precision@1"),
    ("p_at_5", "Precision@5"),
    ("p_at_10", "Precision@10"),
    ("map_at_10", "mAP@10"),
    ("index_recall", "ANN index recall (vs exact search)"),
)
_NA = '<p class="na">Not available.</p>'

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


# --------------------------------------------------------------------------- plots


def plot_confusion_matrix(cm, classes: Sequence[str], path: str | os.PathLike, *, title: str = "Confusion matrix") -> Path:
    """Draw a confusion matrix (rows = true class, columns = predicted) with counts in the cells.

    Colours are row-normalised (recall per class) so small classes stay readable; the
    numbers are raw counts. Returns ``path``.

    Raises:
        ValueError: ``cm`` is not square or does not match ``classes``.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(cm)
    k = len(classes)
    if cm.ndim != 2 or cm.shape != (k, k):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not match {k} classes")
    rows = cm.sum(axis=1, keepdims=True).astype(float)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    side = float(min(max(4.5, 0.45 * k + 2.5), 20.0))
    fig = Figure(figsize=(side + 1.0, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels([str(c) for c in classes], rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center", fontsize=8 if k > 15 else 10)
    ax.set_yticklabels([str(c) for c in classes], fontsize=8 if k > 15 else 10)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)
    if k <= 40:  # beyond that the numbers are unreadable anyway
        fontsize = 10 if k <= 10 else 7 if k <= 20 else 5
        for i in range(k):
            for j in range(k):
                value = cm[i, j]
                text = f"{int(value)}" if float(value).is_integer() else f"{value:.2g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_history(history: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Draw training curves: train/val loss and validation accuracy per epoch. Returns ``path``.

    Rows need ``epoch``; ``train_loss``, ``val_loss`` and ``val_accuracy`` are drawn where
    present (missing or ``None`` values leave a gap).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        _history_figure(history).savefig(tmp, format="png")
    return path


def _history_png(history: Sequence[Mapping[str, Any]]) -> bytes:
    buf = io.BytesIO()
    _history_figure(history).savefig(buf, format="png")
    return buf.getvalue()


def _history_figure(history: Sequence[Mapping[str, Any]]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = list(history)
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(rows)]

    def series(key):
        values = [_as_float(r.get(key)) for r in rows]
        return values if any(v is not None and math.isfinite(v) for v in values) else None

    fig = Figure(figsize=(10, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss = fig.add_subplot(1, 2, 1)
    ax_acc = fig.add_subplot(1, 2, 2)
    for key, name, style in (("train_loss", "train", "o-"), ("val_loss", "validation", "s--")):
        values = series(key)
        if values is not None:
            ax_loss.plot(epochs, [math.nan if v is None else v for v in values], style, label=name, markersize=4)
    ax_loss.set_title("Loss")
    ax_loss.set_xlabel("epoch")
    if ax_loss.lines:
        ax_loss.legend()
    acc = series("val_accuracy")
    if acc is not None:
        ax_acc.plot(epochs, [math.nan if v is None else v for v in acc], "o-", color="tab:green", markersize=4, label="validation")
        best = max(range(len(acc)), key=lambda i: -1 if acc[i] is None else acc[i])
        ax_acc.annotate(f"best {acc[best]:.3f}", (epochs[best], acc[best]), textcoords="offset points", xytext=(0, -14), ha="center", fontsize=9)
    ax_acc.set_title("Validation accuracy")
    ax_acc.set_xlabel("epoch")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- small HTML helpers


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _as_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value if value is not None else "-")
    if isinstance(value, int):
        return f"{value:,}"
    f = _as_float(value)
    if f is None:
        return _e(value)
    if math.isnan(f):
        return "-"
    return f"{f:.{digits}f}"


def _is_num(value: Any) -> bool:
    return not isinstance(value, bool) and _as_float(value) is not None and not isinstance(value, str)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _inline_image(path: str | os.PathLike | None, alt: str, *, css: str = "plot") -> str:
    """An ``<img>`` with the file inlined as a data URI, or a "not available" note."""
    if path is None:
        return _NA
    p = Path(path)
    mime = _MIME.get(p.suffix.lower())
    if mime is None:
        return f'<p class="na">Not available: {_e(p.name)} is not an image.</p>'
    try:
        data = p.read_bytes()
    except OSError:
        return f'<p class="na">Not available: {_e(p)} could not be read.</p>'
    return f'<img class="{css}" alt="{_e(alt)}" src="{_data_uri(data, mime)}">'


def _kv_table(items: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_fmt(v) if _is_num(v) else _e(_plain(v))}</td></tr>" for k, v in items.items())
    return f"<table>{rows}</table>" if rows else ""


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return "" if value is None else str(value)


def _thumb(path: Any, size: int = 96) -> str:
    from ..viz.projection import make_thumbnail

    uri = make_thumbnail(path, size=size) if path else None
    if uri is None:
        return '<div class="noimg">no image</div>'
    return f'<img alt="{_e(Path(str(path)).name)}" src="{uri}">'


# --------------------------------------------------------------------------- sections


def _dataset_section(dataset: Mapping[str, Any] | None) -> str:
    if not dataset:
        return _NA
    parts: list[str] = []
    classes = list(dataset.get("classes") or [])
    counts = dataset.get("counts") or {}
    if classes:
        parts.append(f"<p>{len(classes)} classes: {_e(', '.join(map(str, classes)))}</p>")
    if counts:
        splits = list(counts)
        if all(isinstance(v, Mapping) for v in counts.values()):
            names = classes or sorted({c for v in counts.values() for c in v})
            head = "".join(f"<th>{_e(s)}</th>" for s in splits)
            body = ""
            for c in names:
                cells = "".join(f'<td class="num">{_fmt(counts[s].get(c, 0))}</td>' for s in splits)
                body += f"<tr><th>{_e(c)}</th>{cells}</tr>"
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
                rows.append(f"<tr><td>{_e(item.get('path', ''))}</td><td>{_e(item.get('reason', ''))}</td></tr>")
            elif isinstance(item, tuple) and len(item) == 2:
                rows.append(f"<tr><td>{_e(item[0])}</td><td>{_e(item[1])}</td></tr>")
            else:
                rows.append(f"<tr><td>{_e(item)}</td><td></td></tr>")
        more = f'<p class="muted">... and {len(items) - 200} more.</p>' if len(items) > 200 else ""
        parts.append(f"<p>{len(items)} files skipped.</p><table><tr><th>file</th><th>reason</th></tr>{''.join(rows)}</table>{more}")
    other = {k: v for k, v in dataset.items() if k not in ("classes", "counts", "skipped")}
    if other:
        parts.append("<h3>Details</h3>" + _kv_table(other))
    return "\n".join(parts)


def _strategy_section(strategy: Mapping[str, Any] | None) -> str:
    if not strategy:
        return _NA
    decision = strategy.get("decision", strategy.get("name"))
    parts = []
    if decision is not None:
        parts.append(f'<p class="big">{_e(decision)}</p>')
    evidence = strategy.get("evidence", strategy.get("reason"))
    if evidence:
        if isinstance(evidence, str):
            parts.append(f'<div class="evidence">{_e(evidence)}</div>')
        else:
            items = evidence.items() if isinstance(evidence, Mapping) else ((None, v) for v in evidence)
            lis = "".join(f"<li>{'<b>' + _e(k) + ':</b> ' if k is not None else ''}{_e(v)}</li>" for k, v in items)
            parts.append(f'<div class="evidence"><ul>{lis}</ul></div>')
    other = {k: v for k, v in strategy.items() if k not in ("decision", "name", "evidence", "reason")}
    if other:
        parts.append(_kv_table(other))
    return "\n".join(parts) or _NA


def _training_section(history: Sequence[Mapping[str, Any]] | None) -> str:
    rows = list(history or [])
    if not rows:
        return _NA
    parts = [f'<img class="plot" alt="training curves" src="{_data_uri(_history_png(rows), "image/png")}">']
    cols = ["epoch", "train_loss", "val_loss", "val_accuracy", "seconds"]
    cols += [k for k in dict.fromkeys(k for r in rows for k in r) if k not in cols]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f'<td class="num">{_fmt(r.get(c), 4 if c != "seconds" else 1)}</td>' for c in cols) + "</tr>" for r in rows)
    parts.append(f"<table><tr>{head}</tr>{body}</table>")
    return "\n".join(parts)


def _metrics_section(metrics: Mapping[str, Any] | None, confusion_png: str | os.PathLike | None) -> str:
    if not metrics and confusion_png is None:
        return _NA
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
            body += f'<tr><th>{_e(name)}</th>{cells}<td class="num">{_fmt(int(support)) if support is not None else "-"}</td></tr>'
        parts.append(
            "<h3>Per class</h3><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
            f"{body}</table>"
        )
    other = {k: v for k, v in metrics.items() if k not in ("accuracy", "per_class", "confusion_matrix", "classes") and not isinstance(v, Mapping | list)}
    if other:
        parts.append(_kv_table(other))
    parts.append("<h3>Confusion matrix</h3>" + _inline_image(confusion_png, "confusion matrix"))
    return "\n".join(parts)


def _embedding_section(plots: Mapping[str, str | os.PathLike] | None) -> str:
    if not plots:
        return _NA
    figs = "".join(f"<figure>{_inline_image(p, name)}<figcaption>{_e(name)}</figcaption></figure>" for name, p in plots.items())
    return f'<div class="plots">{figs}</div>'


def _retrieval_section(retrieval: Mapping[str, Any] | None) -> str:
    if not retrieval:
        return _NA
    rows = "".join(
        f'<tr><th>{_e(label)}</th><td class="num">{_fmt(retrieval[key])}</td></tr>'
        for key, label in _RETRIEVAL_METRICS
        if retrieval.get(key) is not None
    )
    known = {k for k, _ in _RETRIEVAL_METRICS}
    other = {k: v for k, v in retrieval.items() if k not in known}
    table = f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>" if rows else ""
    return (table + (_kv_table(other) if other else "")) or _NA


def _gallery_section(gallery: Sequence[Mapping[str, Any]] | None) -> str:
    if not gallery:
        return _NA
    blocks = []
    for entry in gallery:
        qlabel = entry.get("query_label")
        qpath = entry.get("query_path")
        cards = [
            f'<div class="card q">{_thumb(qpath)}<b>query</b><br>{_e(qlabel)}<br><span class="muted">{_e(Path(str(qpath)).name if qpath else "")}</span></div>'
        ]
        for rank, r in enumerate(list(entry.get("results") or [])[:5], start=1):
            correct = r.get("correct")
            if correct is None:
                correct = r.get("label") == qlabel
            mark = '<span class="ok" title="same label">&#10003;</span>' if correct else '<span class="bad" title="different label">&#10007;</span>'
            cards.append(
                f'<div class="card">{_thumb(r.get("path"))}#{rank} {mark} {_e(r.get("label"))}<br>'
                f'<span class="muted">sim {_fmt(r.get("score"), 3)}</span></div>'
            )
        if len(cards) == 1:
            cards.append('<p class="na">No results.</p>')
        blocks.append(f'<div class="query">{"".join(cards)}</div>')
    return "\n".join(blocks)


def _timings_section(timings: Mapping[str, Any] | None) -> str:
    if not timings:
        return _NA
    rows = "".join(f'<tr><th>{_e(k)}</th><td class="num">{_fmt(v, 1)}</td></tr>' for k, v in timings.items())
    return f"<table><tr><th>step</th><th>seconds</th></tr>{rows}</table>"


# --------------------------------------------------------------------------- entry point


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
        confusion_png: image from :func:`plot_confusion_matrix`, inlined.
        plots: ``{caption: png path}`` of embedding projections, inlined.
        retrieval: ``{"p_at_1", "p_at_5", "p_at_10", "map_at_10", "index_recall"?, ...}``.
        gallery: ``[{"query_path", "query_label", "results": [{"path", "label", "score", "correct"}]}]``;
            thumbnails are inlined, the top 5 results shown with a check or cross mark.
        timings: ``{step: seconds}``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Any argument may be ``None`` or empty; its section then says "not available".
    """
    bodies = {
        "dataset": _dataset_section(dataset),
        "strategy": _strategy_section(strategy),
        "training": _training_section(history),
        "metrics": _metrics_section(metrics, confusion_png),
        "embedding": _embedding_section(plots),
        "retrieval": _retrieval_section(retrieval),
        "gallery": _gallery_section(gallery),
        "timings": _timings_section(timings),
    }
    nav = "".join(f'<a href="#{sid}">{_e(_SECTION_TITLES[sid])}</a>' for sid in SECTIONS)
    sections = "\n".join(f'<section id="{sid}">\n<h2>{_e(_SECTION_TITLES[sid])}</h2>\n{bodies[sid]}\n</section>' for sid in SECTIONS)
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>{_e(title)}</h1><div class="sub">Generated {_e(stamp)} by transferkit</div><nav>{nav}</nav></header>\n'
        f"<main>\n{sections}\n</main>\n</body>\n</html>\n"
    )
    path = Path(path)
    write_text_atomic(path, page)
    return path


__all__ = ["SECTIONS", "plot_confusion_matrix", "plot_history", "write_report"]
