"""A local Ray for the distributed tests: 2 CPUs, a small object store, started once per module that asks."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import transferkit as tk

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "transferkit" / "sample_data" / "hymenoptera_mini"


@pytest.fixture(scope="module")
def ray_cluster():
    """``ray`` joined to a local 2-CPU cluster, shut down after the module (the rest of the suite runs without it)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("lance")
    with warnings.catch_warnings():  # Ray's fork+exec of its processes, with lance loaded here
        warnings.filterwarnings("ignore", message="lance is not fork-safe")
        ray.init(num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def by_id(store) -> dict[str, dict]:
    """``{id: row}`` of a store, vectors included."""
    return {r["id"]: r for r in store.rows()}


def assert_same_search_eval(a, b) -> None:
    """The same ``search_eval`` figures: counts exactly, rates within 1e-3.

    Vectors within cosine 0.9999 (the engines batch differently, and oneDNN's kernels depend on
    the batch size on some CPUs) can swap two near-tied neighbours: on an AMD EPYC, tiny_cnn's
    map@10 on hymenoptera was 0.391914 against 0.391927.
    """
    ea, eb = tk.search_eval(a), tk.search_eval(b)
    assert sorted(ea) == sorted(eb)
    for key, value in ea.items():
        if isinstance(value, float):
            assert value == pytest.approx(eb[key], abs=1e-3), key
        else:
            assert value == eb[key], key


def assert_same_store(a, b, *, min_cosine: float = 0.9999) -> None:
    """Same ids, labels, splits and paths, and vectors within ``min_cosine``."""
    ra, rb = by_id(a), by_id(b)
    assert sorted(ra) == sorted(rb)
    for i, row in ra.items():
        other = rb[i]
        assert (row["label"], row["split"], row["path"], row["relpath"]) == (other["label"], other["split"], other["path"],
                                                                              other["relpath"])
        assert (row["fingerprint"], row["size"], row["width"], row["height"]) == (other["fingerprint"], other["size"],
                                                                                  other["width"], other["height"])
    ids = sorted(ra)
    va = np.asarray([ra[i]["vector"] for i in ids], dtype=np.float32)
    vb = np.asarray([rb[i]["vector"] for i in ids], dtype=np.float32)
    assert float((va * vb).sum(1).min()) >= min_cosine


@pytest.fixture
def sample_copy(tmp_path) -> Path:
    """A writable copy of the bundled sample (160 photos of ants and bees)."""
    return Path(shutil.copytree(SAMPLE, tmp_path / "sample"))
