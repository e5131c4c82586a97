"""Training on several processes (torchrun, DDP): the process group, sharded batches, reduced metrics, the launcher.

torchrun starts one process per device with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set. Each joins
one process group (NCCL for CUDA tensors, gloo for CPU ones), takes its shard of every global batch
of the run's one seeded order, and DDP averages the gradients; ``batch_size`` stays the global
batch, so a run gives the same schedule on any number of processes and resumes on another number.
Rank 0 alone writes the run directory. Every function here is the identity on one process.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..config import ProcessLayout
from ..errors import DistributedError
from .context import RunContext

log = logging.getLogger("transferkit")


@contextmanager
def session(device: str, layout: ProcessLayout) -> Iterator[RunContext]:
    """The run's context, in the job's process group (joined here, and left afterwards, when ``layout`` has several
    processes); a collective that fails because another process died becomes a :class:`DistributedError`."""
    if layout.world_size <= 1:
        yield RunContext.create(device)
        return
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        # "cpu:gloo,cuda:nccl": NCCL for the CUDA tensors (gradients), gloo for the CPU ones (metrics, objects)
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield RunContext.create(device, rank=layout.rank, world_size=layout.world_size, local_rank=layout.local_rank)
    except RuntimeError as exc:  # gloo reports a dead peer as a plain RuntimeError, NCCL as a DistError
        if not (isinstance(exc, dist.DistError) or any(w in str(exc) for w in ("gloo", "Gloo", "NCCL"))):
            raise
        raise DistributedError(f"Training process {layout.rank} lost contact with another process of the job "
                               f"({_first_line(exc)}). The last checkpoint is intact: resume the run to continue.") from None
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def _first_line(exc: BaseException) -> str:
    """The gist of a backend's error: its first sentence, without gloo's source location."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip())
    return text.split(". ")[0].splitlines()[0][:160] if text else type(exc).__name__


# -- collectives (the identity on one process) -------------------------------------------------------
def barrier(ctx: RunContext) -> None:
    """Wait for every process (after rank 0 wrote a file the others read, or before it writes into a folder they check)."""
    if ctx.world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(torch.zeros(1))  # a CPU collective: works the same on gloo and on a CUDA job's gloo side


def after_main(ctx: RunContext, then):
    """``then()`` once rank 0 passed its matching :func:`barrier` (it wrote what ``then`` reads)."""
    barrier(ctx)
    return then()


def broadcast_object(ctx: RunContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if ctx.world_size <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(ctx: RunContext, obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order."""
    if ctx.world_size <= 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(ctx: RunContext, loss: float, accuracy: float, n: int) -> tuple[float, float, int]:
    """An epoch's mean loss and accuracy over every process's images (each weighted by its ``n``), and their count."""
    if ctx.world_size <= 1:
        return loss, accuracy, n
    import torch.distributed as dist

    sums = torch.tensor([loss * n, accuracy * n, float(n)], dtype=torch.float64)
    dist.all_reduce(sums)
    total = max(sums[2].item(), 1.0)
    return sums[0].item() / total, sums[1].item() / total, int(sums[2].item())


def merged(ctx: RunContext, mapping: dict) -> dict:
    """The union of every process's ``mapping`` (the unreadable files each one met in its shard)."""
    out: dict = {}
    for part in gather_objects(ctx, mapping):
        out.update(part)
    return out


# -- model and data ------------------------------------------------------------------------------------
def wrap(module: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
    """``module`` in DistributedDataParallel on several processes, else itself.

    DDP registers the parameters that require gradients when it is built, so a strategy that changes them (gradual
    unfreezing at a stage boundary) must wrap again; building it also broadcasts rank 0's weights and buffers.
    """
    if ctx.world_size <= 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, output_device=ctx.device.index if ids else None)


def sync_buffers(module: torch.nn.Module, ctx: RunContext) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every process: each process updated its own in its last step."""
    if ctx.world_size > 1:
        import torch.distributed as dist

        for buf in module.buffers():
            dist.broadcast(buf.data, src=0)


def sync_parameters(module: torch.nn.Module, ctx: RunContext) -> None:
    """Rank 0's parameters on every process (after a computation each process repeated, such as the head's fit)."""
    if ctx.world_size > 1:
        import torch.distributed as dist

        for p in module.parameters():
            dist.broadcast(p.data, src=0)


def shard_batches(batches: list[list[int]], ctx: RunContext) -> list[list[int]]:
    """This process's share of each global batch (every ``world_size``-th index), so all processes take the same number
    of steps; a batch smaller than ``world_size`` is padded from the epoch's first indices, as DistributedSampler pads.

    With a batch size divisible by the process count the shards are equal and DDP's averaged gradient is the global
    batch's, as on one process.
    """
    w = ctx.world_size
    if w <= 1 or not batches:
        return batches
    first = [i for b in batches for i in b][:w]
    out = []
    for b in batches:
        b = b if len(b) >= w else (b + first * w)[:w]
        out.append(b[ctx.rank::w])
    return out


def shard_indices(n: int, ctx: RunContext) -> list[int]:
    """This process's share of ``n`` items (every ``world_size``-th)."""
    return list(range(ctx.rank, n, ctx.world_size))


def predict_sharded(ctx: RunContext, model: torch.nn.Module, images, predict) -> tuple[torch.Tensor, torch.Tensor]:
    """``predict(images)`` -> ``(logits, labels)``, each process predicting its share, gathered on every process (in
    another order than one process's; the metrics do not depend on it)."""
    if ctx.world_size <= 1:
        return predict(images)
    sync_buffers(model, ctx)
    logits, labels = predict(images.subset(shard_indices(len(images), ctx)))
    parts = gather_objects(ctx, (logits.cpu(), labels.cpu()))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def features_sharded(ctx: RunContext, images, compute):
    """``compute(images)`` -> a FeatureBatch, each process computing its share, gathered in dataset order on every one."""
    if ctx.world_size <= 1:
        return compute(images)
    from ..embed.features import FeatureBatch

    idx = shard_indices(len(images), ctx)
    fb = compute(images.subset(idx))
    mine = (fb.features.cpu(), fb.labels.cpu(), torch.tensor([idx[int(i)] for i in fb.indices], dtype=torch.long),
            {idx[i]: r for i, r in fb.skipped.items()}, fb.seconds, {idx[i]: d for i, d in fb.fingerprints.items()})
    parts = gather_objects(ctx, mine)
    indices = torch.cat([p[2] for p in parts])
    order = torch.argsort(indices)
    return FeatureBatch(torch.cat([p[0] for p in parts])[order], torch.cat([p[1] for p in parts])[order], indices[order],
                        {i: r for p in parts for i, r in p[3].items()}, max(p[4] for p in parts),
                        {i: d for p in parts for i, d in p[5].items()})


# -- the launcher ------------------------------------------------------------------------------------------
def launch_torchrun(argv: list[str], nproc: int, *, run_dir: str | os.PathLike | None = None) -> None:
    """Run ``python -m transferkit ARGV`` in ``nproc`` processes under torch.distributed.run (torchrun), on this machine.

    Raises:
        DistributedError: a process failed (its rank and exit status; the last checkpoint stays valid).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    for name in ("torch.distributed.elastic", "torch.distributed.run"):  # the failure is reported once, below
        logging.getLogger(name).setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "transferkit"])
    args.training_script_args = list(argv)  # set, not parsed: argparse would read their options as torchrun's
    try:
        run(args)
    except ChildFailedError as exc:
        # the process that died first is the cause; the others then fail on the lost connection (or torchrun's SIGTERM)
        rank, failure = min(exc.failures.items(), key=lambda kv: (not _killed(kv[1]), kv[1].timestamp, kv[0]))
        code = failure.exitcode
        status = f"killed by {failure.signal_name()}" if code is not None and code < 0 else f"exit code {code}"
        from .checkpoint import CHECKPOINT_FILE

        if run_dir and (Path(run_dir) / CHECKPOINT_FILE).exists():
            then = f"The last checkpoint in {run_dir} is intact: re-run with --resume to continue."
        else:  # it failed before its first checkpoint (often a mistake the process reported above)
            then = "No checkpoint was written yet: see the process's error above, then run the command again."
        raise DistributedError(f"Training process {rank} of {nproc} failed ({status}); the others were stopped. {then}") from None


def _killed(failure) -> bool:
    """Whether a process was killed by a signal other than the launcher's SIGTERM (it did not fail on its own)."""
    return failure.exitcode is not None and failure.exitcode < 0 and failure.signal_name() != "SIGTERM"
