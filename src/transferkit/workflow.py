"""The seven steps end to end, and the run report.

1. load a pretrained backbone, 2. choose a strategy, 3. train, 4. build an extractor from
the trained model, 5. embed every split into a store, 6. plot the embedding space (PCA,
t-SNE), 7. index the store and search it (retrieval quality, example queries). Everything
lands in one run directory, summarised by a self-contained ``report.html``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import write_json_atomic
from ._ui import UI

STORE_DIR = "store"
PLOTS_DIR = "plots"


@dataclass
class PipelineResult:
    """What :func:`pipeline` produced.

    Attributes:
        run: the trained :class:`~transferkit.run.Run` (the run directory itself).
        store: the :class:`~transferkit.store.EmbeddingStore` with every split embedded.
        extractor: the :class:`~transferkit.embed.Extractor` built from the trained model.
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
        """Search the store with an image path, a PIL image or an embedding vector."""
        import numpy as np

        if isinstance(query, (str, os.PathLike)):
            vecs, ok, reasons = self.extractor.embed_files([query])
            if not ok[0]:
                from .errors import DataError

                raise DataError(f"Cannot read query image {query}: {reasons[0]}")
            query = vecs[0]
        elif not isinstance(query, np.ndarray):
            query = self.extractor.embed_images([query])[0]
        return self.store.search(np.asarray(query, dtype=np.float32), top_k=top_k, **kwargs)


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
    quiet: bool = False,
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
        quiet: no progress bars or messages.
        **train_kwargs: passed on to :func:`transferkit.train`.

    Returns:
        A :class:`PipelineResult`.
    """
    from datetime import datetime

    from .data.images import check_folder
    from .report.html import write_report
    from .training.trainer import CONFIG_FILE, train
    from .viz import projection as viz

    check_folder(data)
    ui = UI(quiet)
    out_dir = Path(out) if out is not None else Path("runs") / datetime.now().strftime("pipeline-%Y%m%d-%H%M%S")
    timings: dict[str, float] = {}

    t = time.perf_counter()
    ui.info("[1-3/7] train")
    resume = (out_dir / CONFIG_FILE).exists()
    run = train(data, out=out_dir, model=model, strategy=strategy, epochs=epochs, batch_size=batch_size, seed=seed,
                weights=weights, device=device, resume=resume, quiet=quiet, **train_kwargs)
    timings["train"] = time.perf_counter() - t

    # Imported only now: LanceDB (under .embed/.search) must not be loaded while training
    # forks its data-loading workers (LanceDB warns that forking can deadlock its runtime).
    from .embed.extractor import Extractor, embed_folder
    from .store.search import build_index, search_eval

    t = time.perf_counter()
    ui.info("[4/7] extractor from the trained model")
    extractor = Extractor.from_run(out_dir, device=None if device == "auto" else device)
    ui.info(f"[5/7] embed {data} into {out_dir / STORE_DIR}")
    report = embed_folder(extractor, data, out_dir / STORE_DIR, batch_size=max(batch_size, 64), quiet=quiet)
    timings["embed"] = time.perf_counter() - t
    from .store.store import EmbeddingStore

    store = EmbeddingStore.open(out_dir / STORE_DIR)
    snap = store.snapshot()
    labels = [str(x) for x in snap["label"].tolist()]

    t = time.perf_counter()
    ui.info("[6/7] plot the embedding space")
    plots_dir = out_dir / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = {}
    methods = ["pca", "tsne"] if tsne and len(labels) >= 5 else ["pca"]
    for method in methods:
        proj = viz.project(snap["vectors"], method=method, seed=seed)
        for notice in proj.notices:
            ui.info(f"  {method}: {notice}")
        nice = "PCA" if method == "pca" else "t-SNE"
        plots[nice] = viz.plot_png(proj, labels, plots_dir / f"{method}.png")
        plots[f"{nice} (interactive)"] = viz.plot_html(proj, labels, snap["path"], plots_dir / f"{method}.html")
    timings["plots"] = time.perf_counter() - t

    t = time.perf_counter()
    ui.info("[7/7] index, retrieval quality and example queries")
    index = build_index(store)
    retrieval = search_eval(store)
    gallery = _example_queries(run, store, data)
    timings["search"] = time.perf_counter() - t
    ui.info(f"  index recall@10 {index.get('recall_at_10', float('nan')):.3f}; retrieval p@1 {retrieval['p_at_1']:.3f}, "
            f"p@5 {retrieval['p_at_5']:.3f}, mAP@10 {retrieval['map_at_10']:.3f}")

    m = run.metrics
    dataset = dict(m.get("dataset", {}))
    dataset["skipped"] = m.get("skipped", {})
    inf = report.inference or {}
    dataset["embedded"] = (f"{report.num_rows} images in the store (added {report.added}, updated {report.updated}, "
                           f"removed {report.removed}, unchanged {report.unchanged}, skipped {len(report.skipped)}); "
                           f"{report.images_per_second:.1f} images/s with {inf.get('backend', '?')} {inf.get('precision', '?')}")
    strategy_info = _strategy_summary(run)
    retrieval_info = dict(retrieval)
    retrieval_info["index_recall_at_10"] = index.get("recall_at_10")
    report_path = write_report(
        out_dir / "report.html", title=f"transferkit report: {Path(data).name} with {run.meta['backbone']}",
        dataset=dataset, strategy=strategy_info, history=run.history, metrics=m,
        confusion_png=out_dir / "confusion_matrix.png", plots={k: v for k, v in plots.items() if str(v).endswith(".png")},
        retrieval=retrieval_info, gallery=gallery, timings=timings,
    )
    write_json_atomic(out_dir / "pipeline.json", {
        "data": str(data), "run": str(out_dir), "store": str(out_dir / STORE_DIR), "report": str(report_path),
        "plots": {k: str(v) for k, v in plots.items()}, "retrieval": retrieval, "index": index, "timings": timings,
        "embed": report.to_dict(), "val_accuracy": m.get("val_accuracy"),
    })
    ui.info(f"Report: {report_path}")
    return PipelineResult(run=run, store=store, extractor=extractor, report_path=report_path, plots=plots,
                          retrieval=retrieval, index=index, gallery=gallery, timings=timings)


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
    inference = m.get("inference")
    if inference:
        info["frozen-feature inference"] = f"{inference.get('backend')} {inference.get('precision')}"
    return info


def _example_queries(run, store, data, *, top_k: int = 5) -> list[dict[str, Any]]:
    """One query per class from the validation split, with its top-k neighbours (itself excluded)."""
    from .training.trainer import splits_for_run

    snap = store.snapshot()
    by_path = {str(Path(p).resolve()): i for i, p in enumerate(snap["path"])}
    val = splits_for_run(data, run.meta).val
    gallery = []
    for cls_idx, cls in enumerate(val.classes):
        row = next((by_path[str(p.resolve())] for p, y in zip(val.paths, val.labels)
                    if y == cls_idx and str(p.resolve()) in by_path), None)
        if row is None:
            continue
        qid = str(snap["id"][row])
        results = store.search(snap["vectors"][row], top_k=top_k, exclude_ids=[qid], exact=True)
        gallery.append({
            "query_path": snap["path"][row], "query_label": cls,
            "results": [{"path": r["path"], "label": r["label"], "score": float(r["score"]), "correct": r["label"] == cls}
                        for r in results],
        })
    return gallery
