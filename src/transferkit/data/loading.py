"""DataLoaders over image sets: decoding in worker processes, unreadable images skipped."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from .images import ImageDataset, ImageSet, collate_skip, default_num_workers


def make_loader(images: ImageSet, transform, *, batch_size: int, device: torch.device, num_workers: int | None = None,
                batch_sampler=None, draft_size: int | None = None) -> DataLoader:
    """A DataLoader that decodes in worker processes and skips unreadable images."""
    workers = default_num_workers() if num_workers is None else int(num_workers)
    ds = ImageDataset(images, transform, draft_size=draft_size)
    kwargs = dict(num_workers=workers, collate_fn=collate_skip, pin_memory=device.type == "cuda")
    if workers > 0:
        kwargs["persistent_workers"] = False
        kwargs["prefetch_factor"] = 4
    if batch_sampler is not None:
        return DataLoader(ds, batch_sampler=batch_sampler, **kwargs)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, **kwargs)
