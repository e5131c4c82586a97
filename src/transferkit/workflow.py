"""The seven steps end to end, on the public API, and the run report.

1. load a pretrained backbone, 2. choose a strategy, 3. train, 4. build an extractor from
the trained model, 5. embed every split into a store, 6. plot the embedding space (PCA,
t-SNE), 7. index the store and search it (retrieval quality, example queries), then list
its likely label errors and outliers (``curation.json``). Everything lands in one run
directory, summarised by a self-contained ``report.html``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import write_json_atomic
from .config import Settings, resolve_settings
from .events import Callback, Reporter, make_reporter

STORE_DIR = "store"
PLOTS_DIR = "plots"


@dataclass
class PipelineResult:
    """What :func:`pipeline` produced.

    Attributes:
        run: the trained :class:`~transferkit.Run` (the run directory itself).
        store: the :class:`~transferkit.EmbeddingStore` with every split embedded.
        extractor: the :class:`~transferkit.Extractor` built from the trained model.
        report_path: ``RUN_DIR/report.html``.
        plots: plot name -> file.
        retrieval: leave-one-out retrieval metrics (``p_at_1``, ``p_at_5``, ...).
        index: the approximate index's info (``recall_at_10``, ...).
        gallery: example queries with their top-5 results.
        timings: seconds per step.
    """

    run: Any
    store: Any
    extractor: Any
    report_path: Path
    plots: dict[str, Path] = field(default_factory=dict)
    retrieval: dict[str, Any] = field(default_factory=dict)
    index: dict[str, Any] = field(default_factory=dict)
    gallery: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def search(self, query, *, top_k: int = 5, **kwargs) -> list[dict[str, Any]]:
        """Search the store with an image path, a PIL image or an embedding vector (``kwargs``: ``label``, ``split``,
        ``exact``; see :func:`transferkit.search_store`)."""
        import numpy as np

        import transferkit as tk

        query_kind = "vector" if isinstance(query, np.ndarray) else "image"
        return tk.search_store(self.store, **{query_kind: query}, top_k=top_k, extractor=self.extractor, **kwargs)


def pipeline(
    data: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    model: str = "resnet18",
    strategy: str = "auto",
    epochs: int = 5,
    batch_size: int = 32,
    seed: int = 0,
    weights: str | os.PathLike = "default",
    device: str = "auto",
    tsne: bool = True,
    progress: Callback | Reporter | None = None,
    quiet: bool = False,
    settings: Settings | None = None,
    **train_kwargs: Any,
) -> PipelineResult:
    """Run the seven steps on an image folder and write ``report.html``.

    Re-running with the same ``out`` continues instead of starting over: a finished
    training run is reused (an interrupted one resumes) and embedding is incremental.

    Args:
        data: dataset folder (see :func:`transferkit.train`).
        out: run directory (default ``runs/pipeline-<timestamp>``).
        model, strategy, epochs, batch_size, seed, weights, device: as for :func:`transferkit.train`.
        tsne: also draw a t-SNE map (PCA is always drawn).
        progress: receives the events of every step (a message per step, the steps' own tasks).
        quiet: report nothing (when ``progress`` is not given).
        settings: cache location and pixel limit (``None``: the environment's settings).
        **train_kwargs: passed on to :func:`transferkit.train`.

    Returns:
        A :class:`PipelineResult`.
    """
    from datetime import datetime

    import transferkit as tk

    from .data.folders import check_folder
    from .report import write_report
    from .training.checkpoint import CONFIG_FILE
    from .training.leakage_check import pipeline_leakage

    check_folder(data)
    reporter = make_reporter(progress, quiet=quiet)
    settings = resolve_settings(settings)
    out_dir = Path(out) if out is not None else Path("runs") / datetime.now().strftime("pipeline-%Y%m%d-%H%M%S")
    timings: dict[str, float] = {}

    t = time.perf_counter()
    reporter.message("[1-3/7] train")
    resume = (out_dir / CONFIG_FILE).exists()
    run = tk.train(data, out=out_dir, model=model, strategy=strategy, epochs=epochs, batch_size=batch_size, seed=seed,
                   weights=weights, device=device, resume=resume, progress=reporter, settings=settings, **train_kwargs)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    reporter.message("[4/7] extractor from the trained model")
    extractor = tk.Extractor.from_run(out_dir, device=None if device == "auto" else device, settings=settings)
    reporter.message(f"[5/7] embed {data} into {out_dir / STORE_DIR}")
    report = tk.embed_folder(extractor, data, out_dir / STORE_DIR, batch_size=max(batch_size, 64), progress=reporter,
                             settings=settings)
    timings["embed"] = time.perf_counter() - t
    store = tk.EmbeddingStore.open(out_dir / STORE_DIR)
    leakage = pipeline_leakage(out_dir / "metrics.json", store, reporter)  # near copies, when training could not check them
    if leakage is not None:
        run.metrics["leakage"] = leakage
    snap = store.snapshot()
    labels = [str(x) for x in snap["label"].tolist()]

    t = time.perf_counter()
    reporter.message("[6/7] plot the embedding space")
    plots_dir = out_dir / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = {}
    methods = ["pca", "tsne"] if tsne and len(labels) >= 5 else ["pca"]
    for method in methods:
        proj = tk.project(snap["vectors"], method=method, seed=seed, progress=reporter)
        plots[proj.method_title] = tk.plot_png(proj, labels, plots_dir / f"{method}.png")
        plots[f"{proj.method_title} (interactive)"] = tk.plot_html(proj, labels, snap["path"], plots_dir / f"{method}.html",
                                                                   progress=reporter)
    timings["plots"] = time.perf_counter() - t

    t = time.perf_counter()
    reporter.message("[7/7] index, retrieval quality and example queries")
    index = tk.build_index(store, progress=reporter)
    retrieval = tk.search_eval(store)
    gallery = _example_queries(run, store, data, settings=settings)
    timings["search"] = time.perf_counter() - t
    reporter.message(f"  index recall@10 {index.get('recall_at_10', float('nan')):.3f}; retrieval p@1 {retrieval['p_at_1']:.3f}, "
                     f"p@5 {retrieval['p_at_5']:.3f}, mAP@10 {retrieval['map_at_10']:.3f}")
    t = time.perf_counter()
    curation = _curation(store, reporter)
    write_json_atomic(out_dir / "curation.json", curation)
    timings["curation"] = time.perf_counter() - t

    m = run.metrics
    dataset = dict(m.get("dataset", {}))
    dataset["skipped"] = m.get("skipped", {})
    inf = report.inference or {}
    dataset["embedded"] = (f"{report.num_rows} images in the store (added {report.added}, updated {report.updated}, "
                           f"removed {report.removed}, unchanged {report.unchanged}, skipped {len(report.skipped)}); "
                           f"{report.images_per_second:.1f} images/s with {inf.get('backend', '?')} {inf.get('precision', '?')}")
    retrieval_info = dict(retrieval)
    retrieval_info["index_recall_at_10"] = index.get("recall_at_10")
    report_path = write_report(
        out_dir / "report.html", title=f"transferkit report: {Path(data).name} with {run.meta['backbone']}",
        dataset=dataset, strategy=_strategy_summary(run), history=run.history, metrics=m,
        confusion_png=out_dir / "confusion_matrix.png", plots={k: v for k, v in plots.items() if str(v).endswith(".png")},
        retrieval=retrieval_info, gallery=gallery, timings=timings, curation=curation,
    )
    write_json_atomic(out_dir / "pipeline.json", {
        "data": str(data), "run": str(out_dir), "store": str(out_dir / STORE_DIR), "report": str(report_path),
        "plots": {k: str(v) for k, v in plots.items()}, "retrieval": retrieval, "index": index, "timings": timings,
        "embed": report.to_dict(), "val_accuracy": m.get("val_accuracy"),
    })
    reporter.message(f"Report: {report_path}")
    return PipelineResult(run=run, store=store, extractor=extractor, report_path=report_path, plots=plots,
                          retrieval=retrieval, index=index, gallery=gallery, timings=timings)


def _curation(store, reporter) -> dict[str, Any]:
    """Duplicates, label issues and outliers of the run's store for the report (each ``{"error": message}`` where it cannot run,
    e.g. a class with fewer images than the folds: a report is still written)."""
    from .curate.duplicates import find_duplicates
    from .curate.label_issues import find_label_issues
    from .curate.outliers import find_outliers
    from .errors import TransferKitError

    reporter.message("  duplicates, label issues and outliers of the store")
    out: dict[str, Any] = {}
    for key, find in (("duplicates", lambda s, progress: find_duplicates(s)), ("label_issues", find_label_issues),
                      ("outliers", find_outliers)):
        try:
            out[key] = find(store, progress=reporter).to_dict()
        except TransferKitError as exc:
            out[key] = {"error": str(exc)}
    return out


def _strategy_summary(run) -> dict[str, Any]:
    """The strategy decision and its evidence, as readable key/value pairs for the report."""
    m = run.metrics
    auto = m.get("auto") or {}
    params = m.get("parameters") or {}
    info: dict[str, Any] = {
        "name": run.strategy,
        "reason": auto.get("reason", f"chosen explicitly: {run.strategy}"),
    }
    if auto:
        info["training images"] = auto.get("num_train")
        info["kNN probe accuracy (frozen features)"] = f"{auto.get('probe_accuracy', 0):.3f} on {auto.get('probe_samples')} images"
        info["chance (majority class)"] = f"{auto.get('chance', 0):.3f}"
        info["domain far from pretraining data"] = "yes" if auto.get("is_far_domain") else "no"
    if params:
        info["trainable / total parameters"] = f"{params.get('trainable', 0):,} / {params.get('total', 0):,}"
        info["parameter groups"] = ", ".join(f"{g['name']}: lr {g['lr']:g}, {g['params']:,} params" for g in params.get("groups", []))
    details = {k: v for k, v in (m.get("strategy") or {}).items() if k != "name"}
    if details:
        info["options"] = ", ".join(f"{k}={v}" for k, v in details.items())
    found = m.get("lr_find") or {}
    if found.get("suggestion"):
        info["learning rate"] = (f"head {found['head_lr']:.2e}, backbone {found['backbone_lr']:.2e}: the LR finder's valley "
                                 f"(steepest {found['steepest']:.2e})")
    elif found.get("skipped"):
        info["learning rate"] = "LR finder skipped: " + found["skipped"]
    size = m.get("input_size") or {}
    if size:
        info["input size"] = f"{size['size']} px: {size['reason']}"
    if m.get("ema"):
        info["weight EMA"] = f"decay {m['ema']:g}"
    inference = m.get("inference")
    if inference:
        info["frozen-feature inference"] = f"{inference.get('backend')} {inference.get('precision')}"
    return info


def _example_queries(run, store, data, *, settings: Settings, top_k: int = 5) -> list[dict[str, Any]]:
    """One query per class from the validation split, with its top-k neighbours (itself excluded)."""
    import transferkit as tk

    from .training.evaluate import splits_for_run

    snap = store.snapshot()
    by_path = {str(Path(p).resolve()): i for i, p in enumerate(snap["path"])}
    val = splits_for_run(data, run.meta, settings=settings).val
    gallery = []
    for cls_idx, cls in enumerate(val.classes):
        row = next((by_path[str(p.resolve())] for p, y in zip(val.paths, val.labels)
                    if y == cls_idx and str(p.resolve()) in by_path), None)
        if row is None:
            continue
        results = tk.search_store(store, id=str(snap["id"][row]), top_k=top_k, exact=True)  # the query itself left out
        gallery.append({
            "query_path": snap["path"][row], "query_label": cls,
            "results": [{"path": r["path"], "label": r["label"], "score": float(r["score"]), "correct": r["label"] == cls}
                        for r in results],
        })
    return gallery
