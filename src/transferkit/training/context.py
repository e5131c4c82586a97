"""Where a training run executes: its device and its place among processes, and its seeded randomness.

One process (rank 0 of 1), or one of torchrun's processes (see :mod:`.distributed`), each on its
own device; rank 0 is the one that writes the run directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..inference.devices import resolve_device

#: Epoch ``e`` of a run seeded ``s`` draws from seed ``s * EPOCH_SEED_STRIDE + e``: each epoch's randomness
#: depends on nothing before it, so a run resumed at any epoch repeats the uninterrupted one.
EPOCH_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class RunContext:
    """The device and process layout of a run.

    Attributes:
        device: the torch device of this process.
        rank: this process's index among ``world_size`` training processes.
        world_size: number of training processes.
        local_rank: its index among the processes of its machine.
    """

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def create(cls, device: str = "auto", *, rank: int = 0, world_size: int = 1, local_rank: int = 0) -> RunContext:
        """The context of a process on ``device`` (``auto``: CUDA, then MPS, then the CPU); of several processes, each
        takes the CUDA device of its ``local_rank``."""
        dev = resolve_device(device)
        if world_size > 1 and dev.type == "mps":
            raise ConfigError("Multi-process training runs on CUDA or the CPU, not on MPS. Use `device` cpu, or one process.")
        if world_size > 1 and dev.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(f"{world_size} training processes on this machine need {local_rank + 1}+ GPUs; it has "
                                  f"{torch.cuda.device_count()}. Use at most that many processes, or `device` cpu.")
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        return cls(dev, rank, world_size, local_rank)

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory."""
        return self.rank == 0

    def generator(self, seed: int) -> torch.Generator:
        """A CPU generator seeded ``seed`` (shuffling, sampling), independent of the global RNG."""
        return torch.Generator().manual_seed(int(seed))

    def _fork_rng(self):
        dev = self.device
        if dev.type in ("cuda", "mps"):
            index = dev.index if dev.index is not None else (torch.cuda.current_device() if dev.type == "cuda" else 0)
            return torch.random.fork_rng(devices=[index], device_type=dev.type)
        return torch.random.fork_rng(devices=[])

    @contextmanager
    def isolated(self) -> Iterator[None]:
        """Run a block that may draw from the global RNG, restoring the caller's RNG state afterwards
        (CPU, and this run's accelerator)."""
        with self._fork_rng():
            yield

    @contextmanager
    def seeded(self, seed: int) -> Iterator[None]:
        """Run a block on the global RNG seeded ``seed`` (layer initialisation, dropout, augmentation), restoring
        the caller's RNG state afterwards; only this run's devices are seeded."""
        with self._fork_rng():
            torch.random.default_generator.manual_seed(int(seed))
            if self.device.type == "cuda":
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(int(seed))
            elif self.device.type == "mps":
                torch.mps.manual_seed(int(seed))
            yield


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` (1-based) of a run seeded ``seed``."""
    return int(seed) * EPOCH_SEED_STRIDE + int(epoch)
