"""Frozen-backbone features of an image set, through the same read -> encode path as embedding."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..config import Settings, resolve_settings
from ..data.datasets import ImageFiles, decode_threads, prefetch_batches
from ..data.folders import ImageSet
from ..events import Callback, Reporter


@dataclass
class FeatureBatch:
    features: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: dict[int, str]
    seconds: float
    #: image index -> content digest of the file, when computed with ``fingerprints=True``
    fingerprints: dict[int, str] = field(default_factory=dict)


def compute_features(backbone, images: ImageSet, *, batch_size: int = 64, device: torch.device, num_workers: int | None = None,
                     progress: Reporter | Callback | None = None, description: str = "features", runner=None,
                     backend: str = "auto", precision: str = "auto", settings: Settings | None = None,
                     fingerprints: bool = False) -> FeatureBatch:
    """Run a frozen backbone once over ``images`` (eval transforms) and keep the features on the CPU.

    Images are decoded by threads (one per core by default) a few batches ahead of the
    model, as uint8 with PIL's exact resize (so cached training features equal those of the
    uncached path), and normalised per batch. ``runner`` (an
    :class:`~transferkit.inference.runner.InferenceRunner`) is built from ``backend`` and
    ``precision`` when not given; pass one to reuse its conversion across calls.

    Args:
        progress: a :class:`~transferkit.events.Reporter` or callback for a ``"features"`` task
            (None: silent).
        settings: the pixel limit and conversion cache (``None``: the environment's settings).
        fingerprints: also digest each file's bytes as it is read (``FeatureBatch.fingerprints``), so
            leakage checks need no second pass over the data.
    """
    from ..inference.runner import InferenceRunner

    settings = resolve_settings(settings)
    backbone.eval()
    pre = backbone.preprocessing
    if runner is None:
        runner = InferenceRunner(backbone, input_size=pre.input_size, device=device, backend=backend, precision=precision,
                                 expected_items=len(images), preprocessing=pre, settings=settings)
    elif runner.preprocessing is None:
        runner.preprocessing = pre
    dataset = ImageFiles(images.paths, pre.resize_crop_transform(exact=True), max_pixels=settings.max_pixels,
                         draft_size=pre.resize_size, keep_gray=True, file_record=fingerprints)
    threads = decode_threads() if num_workers is None else int(num_workers)
    reporter = progress if isinstance(progress, Reporter) else Reporter(progress if callable(progress) else None)
    feats, labels, idxs = [], [], []
    skipped: dict[int, str] = {}
    digests: dict[int, str] = {}
    start = time.perf_counter()
    batches = ((x, (idx, bad, extras)) for x, extras, idx, bad in prefetch_batches(dataset, batch_size, threads))
    with reporter.task("features", total=len(images), description=description) as task:
        for y, (idx, bad, extras) in runner.map_uint8(batches):
            for i, reason in bad:
                skipped[int(i)] = reason
            if fingerprints:
                digests.update((int(i), e["fingerprint"]) for i, e in zip(idx, extras))
            if y is not None:
                feats.append(y.float().cpu())
                labels.append(torch.tensor([images.labels[i] for i in idx], dtype=torch.long))
                idxs.append(torch.tensor(idx, dtype=torch.long))
            task.advance(len(idx) + len(bad))
    if feats:
        return FeatureBatch(torch.cat(feats), torch.cat(labels), torch.cat(idxs), skipped, time.perf_counter() - start,
                            digests)
    empty = torch.empty(0, backbone.num_features)
    return FeatureBatch(empty, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped,
                        time.perf_counter() - start)
