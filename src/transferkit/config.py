"""Settings as an explicit object; the one place that reads the environment.

Library functions take ``settings: Settings | None``; ``None`` means :meth:`Settings.from_env`,
so a script behaves as before while a server or a cluster job passes its own settings and
nothing process-wide is read or changed behind its back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import ConfigError

#: Default limit on decoded pixels; larger images are skipped as possible decompression bombs.
DEFAULT_MAX_PIXELS = 100_000_000
CACHE_ENV = "TRANSFERKIT_CACHE"
MAX_PIXELS_ENV = "TRANSFERKIT_MAX_PIXELS"


def default_cache_dir() -> Path:
    return Path(os.path.expanduser("~")) / ".cache" / "transferkit"


@dataclass(frozen=True)
class Settings:
    """Process-independent settings of transferkit.

    Attributes:
        cache_dir: where converted models and precision verdicts are cached.
        max_pixels: images with more decoded pixels are refused (``None``: no limit).
    """

    cache_dir: Path = None  # type: ignore[assignment]  # filled by __post_init__
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_dir", Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir())
        if self.max_pixels is not None and (not isinstance(self.max_pixels, int) or isinstance(self.max_pixels, bool)
                                            or self.max_pixels < 1):
            raise ConfigError(f"`max_pixels` must be a positive integer or None (no limit); got {self.max_pixels!r}.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``$TRANSFERKIT_CACHE`` and ``$TRANSFERKIT_MAX_PIXELS`` (``0`` = no limit), else the defaults.

        Raises:
            ConfigError: ``TRANSFERKIT_MAX_PIXELS`` is not a non-negative integer.
        """
        env = os.environ if environ is None else environ
        cache = env.get(CACHE_ENV) or None
        raw = env.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
        max_pixels: int | None = DEFAULT_MAX_PIXELS
        if raw:
            try:
                value = int(raw)
            except ValueError:
                value = -1
            if value < 0:
                raise ConfigError(f"{MAX_PIXELS_ENV} must be a non-negative integer (0 = no limit); got {env[MAX_PIXELS_ENV]!r}.")
            max_pixels = value or None
        return cls(cache_dir=Path(cache) if cache else None, max_pixels=max_pixels)

    def replace(self, **changes) -> Settings:
        return replace(self, **changes)


def resolve_settings(settings: Settings | None) -> Settings:
    """``settings``, or the environment's when ``None``."""
    return settings if settings is not None else Settings.from_env()


@dataclass(frozen=True)
class ProcessLayout:
    """This process's place in a multi-process job (torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    Attributes:
        rank: index among all ``world_size`` processes (0 writes the run directory).
        world_size: number of processes (1: a plain single-process run).
        local_rank: index among the processes of this machine (its accelerator).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProcessLayout:
        """The layout torchrun set in the environment; one process (rank 0 of 1) when it did not."""
        env = os.environ if environ is None else environ
        try:
            return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
        except ValueError:
            raise ConfigError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them); got "
                              f"{env.get('RANK')!r}, {env.get('WORLD_SIZE')!r}, {env.get('LOCAL_RANK')!r}.") from None

    @property
    def is_main(self) -> bool:
        return self.rank == 0
