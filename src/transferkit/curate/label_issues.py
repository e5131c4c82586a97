"""Likely label errors: images whose given label the rest of the dataset contradicts.

Out-of-fold probabilities from cross-validated linear heads on the frozen embeddings
(:mod:`.crossval`), then confident learning (:mod:`.confident`) picks and ranks the images
whose given label is probably wrong, each with the label the heads suggest instead.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings
from ..errors import DataError
from ..events import Callback, Reporter, make_reporter
from .cards import Card, Section, write_json, write_page
from .confident import DEFAULT_RANK_BY, check_rank_by, find_label_errors
from .crossval import DEFAULT_FOLDS, OutOfFold, out_of_fold_probabilities
from .source import RankedRow, StoreRows, load_rows

__all__ = ["LabelIssue", "LabelIssueReport", "find_label_issues", "label_issues_of_rows"]


@dataclass
class LabelIssue(RankedRow):
    """One image whose given label is probably wrong.

    Attributes:
        rank: 1 for the most likely error.
        id, path, relpath, split: the store row.
        given_label: the label it has; suggested_label: the one the heads prefer.
        score: how likely the label is wrong, in [0, 1] (1 - the label-quality score).
        given_probability, suggested_probability: the out-of-fold probabilities of both labels.
        confident: confident learning selects it too (its class's estimated count of errors reaches it).
    """

    given_label: str
    suggested_label: str
    score: float
    given_probability: float
    suggested_probability: float
    confident: bool = False


@dataclass
class LabelIssueReport:
    """What :func:`find_label_issues` found.

    Attributes:
        issues: every image whose given label is not the most probable one, most likely error first.
        num_confident: how many of them confident learning selects (each marked ``confident``).
        num_images: labelled images examined; num_unlabelled: rows left out for having no label.
        classes: the class names, in the order of :attr:`out_of_fold` columns.
        estimated_num_issues: mislabelled images in the dataset as confident learning estimates them.
        per_class: ``{class: {"images", "issues", "confident", "estimated_noise_rate"}}``.
        confusions: ``[{"given", "suggested", "count"}]`` over the confident issues, most frequent first.
        cross_validation: ``folds``, ``l2``, ``accuracy`` (out-of-fold, against the given labels), ``seconds``.
        rank_by: the label-quality score used.
        store, model: where the vectors came from.
        embedded: what embedding the folder did, or None when a store was given.
        seconds: wall time.
        out_of_fold: the out-of-fold probabilities (not in :meth:`to_dict`).
        row_ids: the store id of each row of :attr:`out_of_fold` (not in :meth:`to_dict`).
    """

    issues: list[LabelIssue]
    num_confident: int
    num_images: int
    num_unlabelled: int
    classes: list[str]
    estimated_num_issues: float
    per_class: dict[str, dict[str, Any]]
    confusions: list[dict[str, Any]]
    cross_validation: dict[str, Any]
    rank_by: str
    store: str
    model: str
    embedded: dict[str, Any] | None = None
    seconds: float = 0.0
    out_of_fold: OutOfFold | None = field(default=None, repr=False)
    row_ids: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the probability matrix, JSON-ready."""
        return {"num_images": self.num_images, "num_unlabelled": self.num_unlabelled, "num_issues": len(self.issues),
                "num_confident": self.num_confident, "estimated_num_issues": round(self.estimated_num_issues, 1), "classes": list(self.classes),
                "rank_by": self.rank_by, "cross_validation": dict(self.cross_validation), "per_class": self.per_class,
                "confusions": self.confusions, "store": self.store, "model": self.model, "embedded": self.embedded,
                "seconds": round(self.seconds, 3), "issues": [i.to_dict() for i in self.issues]}

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` to ``path``. Raises ConfigError when it cannot be written."""
        return write_json(path, self.to_dict())

    def write_html(self, path: str | os.PathLike) -> Path:
        """Write a self-contained page of the ranked images (thumbnails, labels, scores). Raises ConfigError as above."""
        cv = self.cross_validation
        summary = {"images": f"{self.num_images:,} labelled ({self.num_unlabelled:,} without a label left out)",
                   "classes": len(self.classes), "contradicted labels": len(self.issues),
                   "confident issues": self.num_confident, "estimated mislabelled": f"{self.estimated_num_issues:.0f}",
                   "heads": f"{cv['folds']}-fold logistic regression, L2 {cv['l2']:g}, out-of-fold accuracy {cv['accuracy']:.3f}",
                   "model": self.model, "store": self.store}
        summary.update({"most frequent": "; ".join(f"{c['given']} -> {c['suggested']}: {c['count']}" for c in self.confusions[:5])}
                       if self.confusions else {})
        cards = [Card(i.path, f"#{i.rank}  score {i.score:.3f}" + ("  (confident)" if i.confident else ""),
                      [("given", f"given: {i.given_label} ({i.given_probability:.2f})"),
                       ("suggested", f"suggested: {i.suggested_label} ({i.suggested_probability:.2f})")]) for i in self.issues]
        note = (f"Images whose given label the cross-validated heads contradict, most likely error first; about "
                f"{self.estimated_num_issues:.0f} are estimated to be wrong, and confident learning is surest of the "
                f"{self.num_confident} marked confident. "
                "Check each: fix the label, or keep it if the image is only unusual.")
        return write_page(path, title="Likely label errors", summary=summary,
                          sections=[Section("label-issues", "Likely label errors", note, cards)])


def find_label_issues(data_or_store: Any, *, model: Any = None, store: str | os.PathLike | None = None,
                      split: str | None = None, folds: int = DEFAULT_FOLDS, l2: float | str = "auto",
                      rank_by: str = DEFAULT_RANK_BY, seed: int = 0, batch_size: int = 64,
                      progress: Callback | Reporter | None = None, quiet: bool = False,
                      settings: Settings | None = None) -> LabelIssueReport:
    """Find the images whose given label is probably wrong, with the label they probably have.

    Each image's class probabilities come from a linear head trained, in K-fold
    cross-validation, on the other images' embeddings. Every image whose given label is not the
    most probable is ranked, lowest probability of the given label first; confident learning
    estimates how many images of each class are mislabelled and marks that many of each class's
    lowest as ``confident`` (see :mod:`.confident`).

    Args:
        data_or_store: an embedding store (folder or :class:`~transferkit.EmbeddingStore`), whose
            vectors and labels are used, or an image folder (``DATA/<class>/*.jpg``, optionally
            under split folders), embedded first.
        model: for an image folder: a backbone name (default ``efficientnet_lite0``), a trained
            run folder or an :class:`~transferkit.Extractor`.
        store: for an image folder: the store to embed into (default: one in the cache folder, so
            a second call embeds only new or changed files).
        split: examine only this split (default: every labelled row).
        folds: cross-validation folds; every class needs at least this many images.
        l2: the heads' L2 strength, or ``"auto"`` (chosen by held-out log loss on the first fold).
        rank_by: ``self_confidence`` (default) or ``normalized_margin``.
        seed: the fold assignment.
        batch_size: images per forward pass when embedding a folder.
        progress: a callback for :class:`~transferkit.events.Event` objects (default: rendered on stderr unless ``quiet``).
        quiet: report nothing.
        settings: cache folder and pixel limit.

    Returns:
        :class:`LabelIssueReport`.

    Raises:
        DataError: no labelled images, one class only, a class with fewer images than ``folds``;
            or a bad image folder.
        ConfigError: bad ``folds``, ``l2``, ``rank_by``, or ``model``/``store`` given with a store.
        StoreError: a missing or empty store, or no row in ``split``.
    """
    t0 = time.perf_counter()
    reporter = make_reporter(progress, quiet=quiet)
    check_rank_by(rank_by)  # before any embedding
    rows = load_rows(data_or_store, model=model, store=store, split=split, batch_size=batch_size, reporter=reporter,
                     settings=settings)
    return label_issues_of_rows(rows, folds=folds, l2=l2, rank_by=rank_by, seed=seed, reporter=reporter, started=t0)


def label_issues_of_rows(rows: StoreRows, *, folds: int = DEFAULT_FOLDS, l2: float | str = "auto", rank_by: str = DEFAULT_RANK_BY,
                         seed: int = 0, reporter: Reporter | None = None, started: float | None = None) -> LabelIssueReport:
    """:func:`find_label_issues` on rows already loaded (their ``labels`` as given; ``""`` = unlabelled)."""
    t0 = time.perf_counter() if started is None else started
    reporter = reporter or Reporter(None)
    where = rows.store.uri
    labelled = np.flatnonzero(rows.labels != "")
    if labelled.size == 0:
        raise DataError(f"None of the {len(rows):,} images in {where} has a label, so no label can be checked. "
                        f"Put the images in class folders (DATA/<class>/*.jpg) and embed them again.")
    num_unlabelled = len(rows) - labelled.size
    if num_unlabelled:
        reporter.message(f"Left out {num_unlabelled:,} images without a label (not in a class folder).", unlabelled=num_unlabelled)
    rows = rows.subset(labelled) if num_unlabelled else rows
    classes, y = np.unique(rows.labels.astype(str), return_inverse=True)
    classes = [str(c) for c in classes]
    oof = out_of_fold_probabilities(rows.vectors, y, num_classes=len(classes), folds=folds, l2=l2, seed=seed,
                                    class_names=classes, reporter=reporter)
    found = find_label_errors(oof.probabilities, y, rank_by=rank_by)
    probs = oof.probabilities
    confident = set(found.flagged.tolist())
    issues = [LabelIssue(rank=r, id=str(rows.ids[i]), path=rows.paths[i], relpath=rows.relpaths[i], split=str(rows.splits[i]),
                         given_label=classes[y[i]], suggested_label=classes[found.suggested[i]],
                         score=round(1.0 - float(found.quality[i]), 6), given_probability=round(float(probs[i, y[i]]), 6),
                         suggested_probability=round(float(probs[i, found.suggested[i]]), 6),
                         confident=bool(i in confident))
              for r, i in enumerate(found.ranked.tolist(), start=1)]
    issue_per_class = np.bincount(y[found.ranked], minlength=len(classes))
    confident_per_class = np.bincount(y[found.flagged], minlength=len(classes))
    counts = np.bincount(y, minlength=len(classes))
    per_class = {c: {"images": int(counts[k]), "issues": int(issue_per_class[k]), "confident": int(confident_per_class[k]),
                     "estimated_noise_rate": round(float(1.0 - found.noise_matrix[k, k]), 4)} for k, c in enumerate(classes)}
    pairs = Counter((i.given_label, i.suggested_label) for i in issues if i.confident)
    confusions = [{"given": g, "suggested": s, "count": n} for (g, s), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))]
    cv = {"folds": int(folds), "l2": oof.l2, "l2_log_loss": {f"{k:g}": round(v, 4) for k, v in oof.l2_log_loss.items()},
          "accuracy": round(oof.accuracy, 4), "seconds": round(oof.seconds, 3)}
    report = LabelIssueReport(issues, len(confident), len(rows), num_unlabelled, classes, found.estimated_num_issues, per_class, confusions, cv,
                              rank_by, str(where), rows.model, rows.embedded, time.perf_counter() - t0, oof, rows.ids)
    reporter.message(f"{len(issues):,} contradicted labels among {len(rows):,} images, {len(confident):,} confident "
                     f"({len(classes)} classes; {folds}-fold heads, out-of-fold accuracy {oof.accuracy:.3f}; {report.seconds:.1f}s)",
                     num_issues=len(issues), num_confident=len(confident), num_images=len(rows), seconds=report.seconds)
    return report
