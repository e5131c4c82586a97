"""Frozen-backbone features of an image set, through the same decode -> encode path as embedding."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..data.images import ImageSet


@dataclass
class FeatureBatch:
    features: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: dict[int, str]
    seconds: float


class _Uint8Images:
    """Items ``(uint8 HWC array | None, index, None, reason)`` for :func:`~transferkit.data.prefetch_batches`."""

    def __init__(self, images: ImageSet, pre):
        self.images = images
        # exact (PIL) resizing: cached training features equal those of the uncached path
        self.transform = pre.resize_crop_transform(exact=True)
        self.draft = pre.resize_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from ..data.images import UnreadableImageError, load_image

        try:
            im = load_image(self.images.paths[i], draft_size=self.draft, keep_gray=True)
            return self.transform(im), i, None, None
        except UnreadableImageError as exc:
            return None, i, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. a transform failing on a degenerate image
            return None, i, None, f"{type(exc).__name__}: {exc}"[:200]


def compute_features(backbone, images: ImageSet, *, batch_size: int = 64, device: torch.device, num_workers: int | None = None,
                     progress=None, description: str = "features", runner=None, backend: str = "auto",
                     precision: str = "auto") -> FeatureBatch:
    """Run a frozen backbone once over ``images`` (eval transforms) and keep the features on the CPU.

    Images are decoded by threads (one per core by default) a few batches ahead of the
    model, as uint8, and normalised per batch. ``runner`` (an
    :class:`~transferkit.accel.InferenceRunner`) is built from ``backend`` and ``precision``
    when not given; pass one to reuse its conversion across calls.
    """

    from ..data.images import decode_threads, prefetch_batches
    from ..inference.runner import InferenceRunner

    backbone.eval()
    pre = backbone.preprocessing
    if runner is None:
        runner = InferenceRunner(backbone, input_size=pre.input_size, device=device, backend=backend, precision=precision,
                                 expected_items=len(images), preprocessing=pre)
    elif runner.preprocessing is None:
        runner.preprocessing = pre
    threads = decode_threads() if num_workers is None else int(num_workers)
    feats, labels, idxs = [], [], []
    skipped: dict[int, str] = {}
    start = time.perf_counter()
    task = progress.add_task(description, total=len(images)) if progress is not None else None
    batches = ((x, (idx, bad)) for x, idx, _info, bad in prefetch_batches(_Uint8Images(images, pre), batch_size, threads))
    for y, (idx, bad) in runner.map_uint8(batches):
        for i, reason in bad:
            skipped[int(i)] = reason
        if y is not None:
            feats.append(y.float().cpu())
            labels.append(torch.tensor([images.labels[i] for i in idx], dtype=torch.long))
            idxs.append(torch.tensor(idx, dtype=torch.long))
        if task is not None:
            progress.advance(task, len(idx) + len(bad))
    if task is not None:
        progress.remove_task(task)
    if feats:
        return FeatureBatch(torch.cat(feats), torch.cat(labels), torch.cat(idxs), skipped, time.perf_counter() - start)
    empty = torch.empty(0, backbone.num_features)
    return FeatureBatch(empty, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped,
                        time.perf_counter() - start)
