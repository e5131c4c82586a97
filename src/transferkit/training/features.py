"""The frozen backbone's features for a run: the ``auto`` probe and the cached-feature fast path.

With a frozen backbone every epoch would compute the same features again, so they are
computed once (through the same inference runner as embedding) and the head trains on them.
The ``auto`` probe's features of a training sample are kept and reused by the cache.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..data.folders import DatasetSplits
from ..embed.features import compute_features
from ..errors import DataError
from ..events import Reporter
from ..strategies import AutoDecision, choose_auto, knn_probe_accuracy
from . import distributed
from .context import RunContext

log = logging.getLogger("transferkit")

#: Images per class (at most) in the ``auto`` probe sample.
PROBE_PER_CLASS = 60


@dataclass
class CachedFeatures:
    """Features and labels of the readable images of the train and val splits, on the run's device."""

    train: torch.Tensor
    train_labels: torch.Tensor
    val: torch.Tensor
    val_labels: torch.Tensor


class FrozenFeatures:
    """Computes a frozen backbone's features once per image, with one inference runner.

    Args:
        backbone: the (frozen) backbone.
        splits: the run's data.
        ctx: the run's device.
        backend, precision: the inference choice (see :func:`resumed_inference`).
        batch_size: images per inference batch.
        num_workers: decoding threads.
        reporter: progress.
        settings: conversion cache and pixel limit.
    """

    def __init__(self, backbone, splits: DatasetSplits, ctx: RunContext, *, backend: str, precision: str, batch_size: int,
                 num_workers: int | None, reporter: Reporter, settings=None):
        self.backbone = backbone
        self.splits = splits
        self.ctx = ctx
        self.backend, self.precision = backend, precision
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.reporter = reporter
        self.settings = settings
        self._runner = None
        self._probe: dict[int, torch.Tensor] = {}  # train index -> feature, from the auto probe

    @property
    def runner(self):
        """One inference runner for the frozen backbone, shared by the probe and the feature cache."""
        if self._runner is None:
            from ..inference.runner import InferenceRunner

            bb = self.backbone
            self._runner = InferenceRunner(bb, input_size=bb.preprocessing.input_size, device=self.ctx.device,
                                           backend=self.backend, precision=self.precision,
                                           expected_items=len(self.splits.train) + len(self.splits.val),
                                           preprocessing=bb.preprocessing, settings=self.settings)
        return self._runner

    @property
    def info(self) -> dict:
        """The runner's backend, precision and fidelity check (empty before it ran)."""
        return dict(self._runner.info) if self._runner is not None else {}

    def _compute(self, images, description: str, batch_size: int):
        # on several processes each computes its share, and every one gets them all
        return distributed.features_sharded(self.ctx, images, lambda part: compute_features(
            self.backbone, part, batch_size=batch_size, device=self.ctx.device, num_workers=self.num_workers,
            progress=self.reporter, description=description, runner=self.runner, settings=self.settings))

    def probe(self, seed: int) -> AutoDecision:
        """Let ``auto`` decide from how well the frozen features separate the classes (LOO kNN on a sample).

        Raises:
            DataError: fewer than 3 readable images in the sample.
        """
        train = self.splits.train
        per_class: dict[int, list[int]] = {}
        for i in torch.randperm(len(train), generator=self.ctx.generator(seed)).tolist():
            per_class.setdefault(train.labels[i], [])
            if len(per_class[train.labels[i]]) < PROBE_PER_CLASS:
                per_class[train.labels[i]].append(i)
        sample = sorted(i for v in per_class.values() for i in v)
        fb = self._compute(train.subset(sample), "auto: probing features", self.batch_size * 2)
        self._probe = {sample[int(i)]: fb.features[j] for j, i in enumerate(fb.indices.tolist())}
        labels = fb.labels.numpy()
        if len(labels) < 3:
            raise DataError("Too few readable training images to choose a strategy automatically; set `strategy` explicitly.")
        acc = knn_probe_accuracy(fb.features.numpy(), labels)
        import numpy as np

        chance = float(np.bincount(labels).max() / len(labels))
        return choose_auto(len(train), acc, chance, probe_samples=len(labels))

    def cache(self, on_skip) -> CachedFeatures:
        """Features of every readable train and val image (the probe's reused); ``on_skip(images, {i: reason})``.

        Raises:
            DataError: no training image could be decoded.
        """
        splits, memo = self.splits, self._probe
        batch = max(self.batch_size, 64)
        todo = [i for i in range(len(splits.train)) if i not in memo]
        part = self._compute(splits.train.subset(todo), "features (train)", batch)
        feats = dict(memo)  # merged with the probe's features, in dataset order
        feats.update({todo[int(i)]: part.features[j] for j, i in enumerate(part.indices.tolist())})
        order = sorted(feats)
        train = torch.stack([feats[i] for i in order]) if order else torch.empty(0, self.backbone.num_features)
        train_labels = torch.tensor([splits.train.labels[i] for i in order], dtype=torch.long)
        va = self._compute(splits.val, "features (val)", batch)
        on_skip(splits.train, {todo[i]: r for i, r in part.skipped.items()})
        on_skip(splits.val, va.skipped)
        if len(train) == 0:
            raise DataError(f"None of the training images under {splits.root} could be decoded. Check the files.")
        n_new, seconds = len(part.features) + len(va.features), part.seconds + va.seconds
        info = self.info
        self.reporter.message(f"Cached frozen features of {len(train) + len(va.features)} images ({n_new} computed in "
                              f"{seconds:.1f}s, {n_new / max(seconds, 1e-9):.0f} img/s, "
                              f"{info.get('backend')} {info.get('precision')})",
                              images=len(train) + len(va.features), computed=n_new, seconds=seconds,
                              backend=info.get("backend"), precision=info.get("precision"))
        dev = self.ctx.device
        return CachedFeatures(train.to(dev), train_labels.to(dev), va.features.to(dev), va.labels.to(dev))


def resumed_inference(backend: str, precision: str, used: dict | None, device: torch.device) -> tuple[str, str]:
    """Backend and precision of the frozen features: as configured, except that ``auto`` on a resumed run repeats
    what its checkpoint recorded (``used``).

    The choice depends on the conversion cache and on remembered bf16 verdicts, which other jobs change, so a
    resume could otherwise compute its features differently from the epochs before it. A recorded OpenVINO that
    is no longer installed, or bf16 on a CPU without native bf16 (a resume on another machine), is left to ``auto``.
    """
    from ..inference.cpu import cpu_has_bf16
    from ..inference.openvino_backend import openvino_available

    used = used if isinstance(used, dict) else {}
    if backend == "auto" and (used.get("backend") == "torch" or (used.get("backend") == "openvino" and openvino_available())):
        backend = used["backend"]
    if precision == "auto" and backend == used.get("backend") and (
            used.get("precision") == "fp32" or (used.get("precision") == "bf16" and (device.type != "cpu" or cpu_has_bf16()))):
        precision = used["precision"]
    return backend, precision
