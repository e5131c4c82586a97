"""Shared fixtures: synthetic colour-separable image folders and the real datasets in ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: ``shared/`` lies beside the repository (as for CI's fresh clone); the datasets are read-only.
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

#: Class name -> RGB centre colour; classes are separable by colour alone.
COLOURS = {"blue": (30, 40, 210), "green": (30, 200, 40), "red": (210, 30, 40)}


def write_class_images(folder: Path, colour: tuple[int, int, int], count: int, rng: np.random.Generator) -> list[Path]:
    """Write ``count`` noisy images of one colour (32..64 px, alternating PNG/JPEG) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        h, w = int(rng.integers(32, 65)), int(rng.integers(32, 65))
        arr = (np.array(colour) + rng.integers(-30, 31, (h, w, 3))).clip(0, 255).astype("uint8")
        path = folder / (f"img{i:03d}.png" if i % 2 == 0 else f"img{i:03d}.jpg")
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def make_dataset(root: Path, *, layout: str = "split", classes: tuple[str, ...] = ("blue", "green", "red"),
                 per_class: int = 12, val_per_class: int = 4, seed: int = 0) -> Path:
    """Create a synthetic dataset under ``root``.

    Args:
        layout: ``"split"`` for ``train/`` + ``val/`` class folders, ``"flat"`` for plain class folders.
        per_class: training images per class (all images per class for ``"flat"``).
        val_per_class: validation images per class (``"split"`` only).
    """
    rng = np.random.default_rng(seed)
    for c in classes:
        if layout == "split":
            write_class_images(root / "train" / c, COLOURS[c], per_class, rng)
            write_class_images(root / "val" / c, COLOURS[c], val_per_class, rng)
        elif layout == "flat":
            write_class_images(root / c, COLOURS[c], per_class, rng)
        else:
            raise ValueError(layout)
    return root


@pytest.fixture(scope="session")
def dataset_factory(tmp_path_factory):
    """Build (and cache per arguments) synthetic datasets: ``dataset_factory(layout="split"|"flat", ...)``.

    The returned folders are shared by the session: tests must not modify them (copy first).
    """
    cache: dict[tuple, Path] = {}

    def factory(layout: str = "split", **kwargs) -> Path:
        key = (layout, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = make_dataset(tmp_path_factory.mktemp(f"data-{layout}"), layout=layout, **kwargs)
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def split_data(dataset_factory) -> Path:
    """``train/`` + ``val/`` layout, 3 colour classes, 12 train / 4 val images each (read-only)."""
    return dataset_factory("split")


@pytest.fixture(scope="session")
def flat_data(dataset_factory) -> Path:
    """Plain class-folder layout, 3 colour classes x 10 images (read-only)."""
    return dataset_factory("flat", per_class=10)


def _shared(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"{path} is not available")
    return path


@pytest.fixture(scope="session")
def hymenoptera() -> Path:
    """The hymenoptera ants/bees dataset (train/ + val/), skipped when absent."""
    return _shared("hymenoptera")


@pytest.fixture(scope="session")
def flowers12() -> Path:
    """The flowers12 dataset (train/ + test/, no val/), skipped when absent."""
    return _shared("flowers12")


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Converted models and precision decisions go to a cache of this test session, not the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TRANSFERKIT_CACHE", str(tmp_path_factory.mktemp("transferkit-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread():
    """One intra-op thread: on a small shared machine this makes tiny-model tests ~5x faster."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def synth():
    """The synthetic-data helpers, for tests that build their own variant of a dataset."""
    import types

    return types.SimpleNamespace(COLOURS=COLOURS, make_dataset=make_dataset, write_class_images=write_class_images)


@pytest.fixture
def runner_bf16_flags(monkeypatch) -> list[bool]:
    """The ``bf16_safe`` every :class:`~transferkit.inference.runner.InferenceRunner` built during the test settled on, in order."""
    from transferkit.inference.runner import InferenceRunner

    seen: list[bool] = []
    real_init = InferenceRunner.__init__

    def spy(self, *a, **kw):
        real_init(self, *a, **kw)
        seen.append(self.bf16_safe)

    monkeypatch.setattr(InferenceRunner, "__init__", spy)
    return seen


@pytest.fixture
def stop_after_epoch():
    """``stop_after_epoch(n)``: a progress callback that interrupts training (KeyboardInterrupt) once epoch ``n`` is
    reported, as a user's Ctrl-C would."""
    def factory(n: int):
        def callback(event):
            if event.kind == "message" and event.data.get("epoch") == n and "val_accuracy" in event.data:
                raise KeyboardInterrupt
        return callback

    return factory
