"""The report's curation section: the duplicates, likely label errors and outliers of the run's store, with thumbnails."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .sections import NA, _thumb, escape

#: Images shown per list (the run folder's ``curation.json`` has all of them).
SHOWN = 8


def _cards(items: list[Mapping[str, Any]], line) -> str:
    cards = "".join(f'<div class="card">{_thumb(i.get("path"))}{line(i)}</div>' for i in items[:SHOWN])
    return f'<div class="query">{cards}</div>' if cards else '<p class="na">None found.</p>'


def curation_section(curation: Mapping[str, Any] | None) -> str:
    """``curation``: ``{"duplicates": DuplicateReport.to_dict(), "label_issues": LabelIssueReport.to_dict() or {"error": message},
    "outliers": OutlierReport.to_dict() or {"error": message}}``."""
    if not curation:
        return NA
    parts: list[str] = []
    for title, key, render, always in (("Duplicates", "duplicates", _duplicates, False),
                                       ("Likely label errors", "label_issues", _label_issues, True),
                                       ("Outliers: far from everything", "outliers", _outliers, True)):
        data = curation.get(key) or {}
        if data or always:  # a curation.json written before duplicates were in it has no such part
            parts.append(f"<h3>{title}</h3>")
        if "error" in data:
            parts.append(f'<p class="na">Not available: {escape(data["error"])}</p>')
        elif data:
            parts.extend(render(data))
    return "\n".join(parts)


def _duplicates(dups: Mapping[str, Any]) -> list[str]:
    groups = [{"path": g["paths"][0], **g} for g in dups.get("groups", [])]
    return [f"<p>{dups.get('num_groups', 0):,} groups of copies among {dups.get('num_images', 0):,} images "
            f"({dups.get('num_exact_pairs', 0):,} exact pairs, {dups.get('num_near_pairs', 0):,} near pairs "
            f"confirmed by the pixels); {dups.get('num_removable', 0):,} could be removed, keeping the image "
            f"shown. <code>transferkit duplicates</code> writes the page of every group.</p>",
            _cards(groups, lambda g: (f'{len(g["ids"])} {escape(g["kind"])} copies<br>'
                                      f'<span class="muted">min cosine {g["min_similarity"]:.3f}</span>'))]


def _label_issues(issues: Mapping[str, Any]) -> list[str]:
    cv = issues.get("cross_validation", {})
    return [f"<p>{issues.get('num_issues', 0):,} of {issues.get('num_images', 0):,} images have a label the "
            f"{escape(cv.get('folds'))}-fold heads on the embeddings contradict ({issues.get('num_confident', 0):,} "
            f"confident; out-of-fold accuracy {float(cv.get('accuracy', 0)):.3f}); most likely first.</p>",
            _cards(issues.get("issues", []), lambda i: (
                f'#{i["rank"]} <span class="bad">{escape(i["given_label"])}</span> &rarr; '
                f'<span class="ok">{escape(i["suggested_label"])}</span><br><span class="muted">score {i["score"]:.3f}</span>'))]


def _outliers(outliers: Mapping[str, Any]) -> list[str]:
    return [f"<p>{outliers.get('num_flagged', 0):,} images with robust z >= {outliers.get('z_threshold')} of the mean "
            f"distance to their {outliers.get('k')} nearest neighbours.</p>",
            _cards(outliers.get("outliers", []), lambda o: (
                f'#{o["rank"]} {escape(o.get("label") or "-")}<br><span class="muted">z {o["z"]:.1f}</span>'))]
