"""A finished training run: its model, metrics, history, evaluation and prediction."""

from __future__ import annotations

import json
import logging
import os
from functools import cached_property
from pathlib import Path
from typing import Any

from ..data.folders import ImageSet, is_image_file, list_images
from ..errors import DataError, DataNotFoundError


class Run:
    """A run directory written by :func:`transferkit.train`.

    Attributes:
        path: the run directory.
        meta: ``model.json`` (backbone, weights, preprocessing, classes, strategy, auto evidence).
        metrics: ``metrics.json`` (empty dict if the run has not finished).
    """

    def __init__(self, path: str | os.PathLike):
        from .model import read_model_meta

        self.path = Path(path)
        self.meta = read_model_meta(self.path)
        metrics_path = self.path / "metrics.json"
        self.metrics: dict[str, Any] = {}
        if metrics_path.exists():
            # metrics.json is a report, not needed to predict or evaluate: a damaged one is ignored with a warning.
            try:
                metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                metrics = None
                reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            else:
                reason = "expected a JSON object"
            if isinstance(metrics, dict):
                self.metrics = metrics
            else:
                logging.getLogger("transferkit").warning(
                    "Ignoring corrupt %s (%s). Hint: evaluating the run on its data recomputes the metrics.",
                    metrics_path, reason)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Run:
        """Open a run directory.

        Raises:
            RunError: not a run. CorruptRunError: damaged or incomplete run files.
        """
        return cls(path)

    def __repr__(self) -> str:
        acc = self.metrics.get("val_accuracy")
        return f"Run({str(self.path)!r}, model={self.meta['backbone']!r}, strategy={self.strategy!r}, val_accuracy={acc})"

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def strategy(self) -> str:
        return (self.meta.get("strategy") or {}).get("name", "?")

    @property
    def preprocessing(self):
        from ..backbones import Preprocessing

        return Preprocessing.from_dict(self.meta["preprocessing"])

    @cached_property
    def model(self):
        """The trained :class:`~transferkit.training.model.TransferModel` (loaded on first use)."""
        from .model import load_model

        return load_model(self.path)[0]

    @property
    def history(self) -> list[dict[str, Any]]:
        import csv

        path = self.path / "history.csv"
        if not path.exists():
            return []
        with path.open() as f:
            return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def evaluate(self, data: str | os.PathLike, *, split: str = "val", batch_size: int = 64, device: str = "auto",
                 num_workers: int | None = None, progress=None, quiet: bool = True, settings=None) -> dict[str, Any]:
        """Accuracy, loss, per-class precision/recall/F1 and confusion matrix on a split of ``data``.

        Raises:
            DataError: the split is missing or holds classes the model does not know.
        """
        from ..events import make_reporter
        from ..inference.devices import resolve_device
        from .evaluate import classification_metrics, predict_logits, splits_for_run

        dev = resolve_device(device)
        model = self.model.to(dev)  # first: a damaged run is reported as such, not as a data mismatch
        splits = splits_for_run(data, self.meta, settings=settings)
        images = self._remap(splits.split(split))
        logits, labels = predict_logits(model, images, batch_size=batch_size, device=dev, num_workers=num_workers,
                                        reporter=make_reporter(progress, quiet=quiet), settings=settings)
        out = classification_metrics(logits, labels, self.classes)
        out["split"] = split
        out["skipped_files"] = len(splits.skipped) + (len(images) - len(labels))
        return out

    def _remap(self, images: ImageSet) -> ImageSet:
        unknown = sorted(set(images.classes) - set(self.classes))
        present = {images.classes[y] for y in images.labels}
        unknown = [c for c in unknown if c in present]
        if unknown:
            raise DataError(f"The data has classes the model was not trained on: {', '.join(unknown)}. "
                            f"The model knows: {', '.join(self.classes)}.")
        return ImageSet(images.paths, [self.classes.index(images.classes[y]) for y in images.labels], self.classes)

    def predict(self, paths, *, top_k: int = 3, batch_size: int = 32, device: str = "auto", num_workers: int | None = None,
                quiet: bool = True, settings=None) -> list[dict[str, Any]]:
        """Top-k labels with probabilities for image files and folders (walked recursively).

        Returns:
            One dict per image: ``{"path", "predictions": [{"label", "probability"}, ...]}``, or
            ``{"path", "error"}`` for a file that cannot be decoded.

        Raises:
            DataError: ``top_k`` < 1, or no images. DataNotFoundError: a missing path.
        """
        import torch

        from ..data.loading import make_loader
        from ..inference.devices import resolve_device
        from ..inference.torch_backend import forward
        from .evaluate import eval_autocast_dtype

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        files = expand_paths(paths)
        if top_k < 1:
            raise DataError(f"`top_k` must be >= 1; got {top_k}.")
        k = min(top_k, len(self.classes))
        dev = resolve_device(device)
        model = self.model.to(dev).eval()
        images = ImageSet(files, [0] * len(files), self.classes)
        pre = model.preprocessing
        loader = make_loader(images, pre.eval_transform(), batch_size=batch_size, device=dev, num_workers=num_workers,
                             draft_size=pre.resize_size, settings=settings)
        dtype = eval_autocast_dtype(dev)
        results: list[dict[str, Any] | None] = [None] * len(files)
        for x, _y, idx, bad in loader:
            for i, reason in bad:
                results[int(i)] = {"path": str(files[int(i)]), "error": reason}
            if x is None:
                continue
            top = torch.softmax(forward(model, x, device=dev, autocast_dtype=dtype), dim=1).cpu().topk(k, dim=1)
            for row, i in enumerate(idx.tolist()):
                results[i] = {"path": str(files[i]), "predictions": [
                    {"label": self.classes[int(c)], "probability": float(p)}
                    for p, c in zip(top.values[row].tolist(), top.indices[row].tolist())]}
        return [r for r in results if r is not None]


def expand_paths(paths) -> list[Path]:
    """Files as given, folders walked for images; missing paths raise :class:`DataNotFoundError`."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise DataNotFoundError(f"Not found: {p}. Pass image files or folders of images.")
        if p.is_dir():
            files.extend(list_images(p))
        elif is_image_file(p) or p.suffix:
            files.append(p)
    if not files:
        raise DataError(f"No images found in {', '.join(str(p) for p in paths)}. Supported: jpg, png, bmp, gif, webp, tiff.")
    return files


def _num(v: str):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def load_run(path: str | os.PathLike) -> Run:
    """Open a finished run directory."""
    return Run.load(path)
