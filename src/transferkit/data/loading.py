"""DataLoaders over image sets: decoding in worker processes, unreadable images skipped.

Workers are forked from the caller only while that is safe: once LanceDB is loaded (a
server that trains and searches in one process) its native runtime threads hold locks that a
forked child inherits without the threads, which can deadlock it; workers then come from a
fork server (a fresh interpreter), which costs one start-up of ~3 s per process (torch's
import) and, as on macOS and Windows, needs a script's training code under
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import functools
import multiprocessing
import sys

import torch
from torch.utils.data import DataLoader

from ..config import Settings, resolve_settings
from .datasets import ImageFiles, collate_tensors, default_num_workers
from .folders import ImageSet

#: Modules whose native threads make forking the process unsafe.
FORK_UNSAFE_MODULES = ("lancedb", "lance")
#: Imported once by the fork server, so each worker starts with them loaded.
_WORKER_PRELOAD = ("torch", "torchvision.transforms", "PIL.Image", "transferkit.data.datasets")


def worker_context():
    """The multiprocessing context of data-loading workers: fork while no :data:`FORK_UNSAFE_MODULES`
    module is loaded (no start-up cost), else a fork server (spawn where there is none)."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and not any(name in sys.modules for name in FORK_UNSAFE_MODULES):
        return multiprocessing.get_context("fork")
    return _server_context()


@functools.cache
def _server_context():
    """The fork server's context, its preload list set once (the one process-wide setting here, and only
    while no server runs: one already started is used as it is)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    ctx = multiprocessing.get_context("forkserver")
    server = getattr(forkserver, "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is None:
        ctx.set_forkserver_preload(list(_WORKER_PRELOAD))  # not __main__: the server never runs the caller's script
    return ctx


def make_loader(images: ImageSet, transform, *, batch_size: int, device: torch.device, num_workers: int | None = None,
                batch_sampler=None, draft_size: int | None = None, settings: Settings | None = None,
                generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader of ``(x, labels, indices, bad)`` batches (see :func:`~transferkit.data.datasets.collate`).

    Images are decoded in ``num_workers`` worker processes (default :func:`default_num_workers`;
    0 decodes in the caller) started by :func:`worker_context`; unreadable images are listed
    in ``bad`` as ``(index, reason)``. ``generator`` seeds the workers (their augmentation)
    instead of the global RNG.
    """
    workers = default_num_workers() if num_workers is None else int(num_workers)
    ds = ImageFiles.from_set(images, transform, draft_size=draft_size, max_pixels=resolve_settings(settings).max_pixels)
    kwargs = dict(num_workers=workers, collate_fn=collate_tensors, pin_memory=device.type == "cuda", generator=generator)
    if workers > 0:
        kwargs.update(persistent_workers=False, prefetch_factor=4, multiprocessing_context=worker_context())
    if batch_sampler is not None:
        return DataLoader(ds, batch_sampler=batch_sampler, **kwargs)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, **kwargs)
