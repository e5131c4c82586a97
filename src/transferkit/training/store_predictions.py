"""A run's predicted label for every image of a store, computed once and cached in the store folder.

The store's vectors are L2-normalised, so the run's head cannot be applied to them (it was
trained on raw features): the predictions come from :meth:`Run.predict` over the stored
images' files. The cache (``<store>/predictions/<run digest>.json``) is keyed by the run's
weights and, per row, by the row's file fingerprint: when the store changes only new or
changed rows are predicted again.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from .._hashing import bytes_digest, file_digest
from .._io import read_json_object, write_json_atomic
from ..errors import TransferKitError

__all__ = ["PREDICTIONS_DIR", "predict_store"]

PREDICTIONS_DIR = "predictions"
_lock = threading.Lock()


def predict_store(run: Any, store: Any, *, batch_size: int = 32, device: str = "auto", num_workers: int | None = None,
                  settings=None) -> dict[str, dict[str, Any]]:
    """``{id: {"label", "confidence"}}`` for every row of ``store`` whose image the run can read.

    Rows whose file is missing or unreadable are left out. Results are cached in the store
    folder by run weights and row fingerprint, so a second call (or one after adding images)
    only predicts what is new.

    Args:
        run: a :class:`~transferkit.Run` (or its folder).
        store: an open :class:`~transferkit.EmbeddingStore`.
        num_workers: data-loading worker processes (0: decode in this process, as a server does).

    Raises:
        RunError: ``run`` is not a run.
    """
    from .run import Run

    run = run if isinstance(run, Run) else Run.load(run)
    weights = Path(run.path) / "model.safetensors"
    key = file_digest(weights) if weights.is_file() else "run-" + bytes_digest(str(Path(run.path).resolve()).encode())
    cache_path = Path(store.path) / PREDICTIONS_DIR / f"{key}.json"
    snap = store.snapshot()
    rows = store.rows(columns=["id", "path", "fingerprint"])
    with _lock:
        try:
            cached = read_json_object(cache_path, error=TransferKitError, what="predictions cache", remedy="")
        except TransferKitError:
            cached = {}
        known: dict[str, Any] = cached.get("rows", {}) if isinstance(cached.get("rows"), dict) else {}
        out: dict[str, dict[str, Any]] = {}
        todo: list[dict[str, Any]] = []
        for r in rows:
            hit = known.get(r["id"])
            if isinstance(hit, dict) and hit.get("fingerprint") == r["fingerprint"]:
                if hit.get("label") is not None:
                    out[r["id"]] = {"label": hit["label"], "confidence": float(hit["confidence"])}
            else:
                todo.append(r)
        fresh = _predict(run, todo, batch_size=batch_size, device=device, num_workers=num_workers, settings=settings)
        out.update({i: p for i, p in fresh.items() if p is not None})
        keep = {r["id"]: known[r["id"]] for r in rows if r["id"] in known}
        for r in todo:
            p = fresh.get(r["id"])
            keep[r["id"]] = {"fingerprint": r["fingerprint"], **(p or {"label": None, "confidence": 0.0})}
        if todo or len(keep) != len(known):
            try:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(cache_path, {"run": str(run.path), "store_version": int(snap["version"]), "rows": keep})
            except OSError:  # a read-only store still answers; it predicts again next time
                pass
    return out


def _predict(run: Any, rows: list[dict[str, Any]], *, batch_size: int, device: str, num_workers: int | None, settings) -> dict[str, dict[str, Any] | None]:
    existing = [r for r in rows if os.path.isfile(r["path"])]
    result: dict[str, dict[str, Any] | None] = {r["id"]: None for r in rows}
    if not existing:
        return result
    by_path = {}
    for r in existing:
        by_path.setdefault(str(Path(r["path"])), []).append(r["id"])
    for pred in run.predict([r["path"] for r in existing], top_k=1, batch_size=batch_size, device=device,
                            num_workers=num_workers, settings=settings):
        if "predictions" not in pred:
            continue
        best = pred["predictions"][0]
        for rid in by_path.get(str(Path(pred["path"])), []):
            result[rid] = {"label": best["label"], "confidence": float(best["probability"])}
    return result
