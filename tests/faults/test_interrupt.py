"""Interruption without loss: SIGKILL mid-epoch then --resume, SIGKILL mid-embed then re-run, SIGINT."""

from __future__ import annotations

import csv
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import spawn

pytestmark = pytest.mark.slow

#: tiny_cnn on the full (uncached) path, no workers: about a second per epoch on a busy 2-core machine.
TRAIN_KW = dict(model="tiny_cnn", strategy="feature-extraction", epochs=5, batch_size=16, seed=3, feature_cache=False,
                num_workers=0, augment=True, quiet=True)


@pytest.fixture(scope="module")
def big_data(tmp_path_factory, synth):
    return synth.make_dataset(tmp_path_factory.mktemp("interrupt") / "data", per_class=120, val_per_class=10)


def _wait_for(predicate, proc, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) before {what}:\n{err[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as f:
        return list(csv.DictReader(f))


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(big_data, tmp_path):
    import transferkit as tk

    killed = tmp_path / "killed"
    kw = ", ".join(f"{k}={v!r}" for k, v in TRAIN_KW.items())
    proc = spawn(f"import transferkit as tk; tk.train({str(big_data)!r}, out={str(killed)!r}, {kw})")
    _wait_for(lambda: (killed / "checkpoint.pt").exists(), proc, 240, "the epoch-1 checkpoint")
    time.sleep(0.3)  # well inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (killed / "metrics.json").exists(), "the run finished before it was killed: make the epochs longer"
    done_before = len(_history(killed))
    assert 1 <= done_before < TRAIN_KW["epochs"]
    json.loads((killed / "config.json").read_text())  # every file written so far is complete
    assert (killed / "model.safetensors").stat().st_size > 0

    resumed = tk.train(big_data, out=killed, resume=True, **TRAIN_KW)
    reference = tk.train(big_data, out=tmp_path / "reference", **TRAIN_KW)
    got, want = _history(killed), _history(tmp_path / "reference")
    assert [r["epoch"] for r in got] == [str(e) for e in range(1, TRAIN_KW["epochs"] + 1)]
    for a, b in zip(got, want):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr_head"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-5), (a["epoch"], key)
    assert resumed.metrics["val_accuracy"] == pytest.approx(reference.metrics["val_accuracy"], abs=1e-6)
    assert resumed.metrics["best_epoch"] == reference.metrics["best_epoch"]
    assert not list(killed.glob(".*.tmp")), "a temporary file was left behind by the finished run"


def test_sigint_stops_cleanly_with_a_resume_hint(big_data, tmp_path):
    run = tmp_path / "run"
    import subprocess

    from .conftest import PYTHON, REPO, subprocess_env

    proc = subprocess.Popen(
        [PYTHON, "-c", "from transferkit.cli import entrypoint; entrypoint()", "train", str(big_data), "--model", "tiny_cnn",
         "--strategy", "feature-extraction", "--no-feature-cache", "--workers", "0", "--epochs", "20", "--out", str(run), "-q"],
        cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a test run started in the background (`make test &`) inherits SIGINT ignored, and Python
        # keeps an ignored SIGINT ignored: give the child the default disposition, as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for(lambda: (run / "checkpoint.pt").exists(), proc, 240, "the first checkpoint")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "Interrupted" in err and "--resume" in err
    assert 1 <= len(_history(run)) < 20


def test_sigkill_mid_embed_then_rerun_completes_without_duplicates(tmp_path, synth, cli):
    from transferkit.store.store import EmbeddingStore

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for name, colour in synth.COLOURS.items():
        synth.write_class_images(data / name, colour, 100, rng)
    total = 300
    store = tmp_path / "store"
    code = (f"from transferkit.embed.extractor import Extractor; from transferkit.embed.local import embed_folder; "
            f"embed_folder(Extractor.from_backbone('tiny_cnn'), {str(data)!r}, {str(store)!r}, batch_size=4, chunk_size=4, "
            f"quiet=True, num_workers=0)")
    proc = spawn(code)
    versions = store / "embeddings.lance" / "_versions"
    _wait_for(lambda: versions.is_dir() and len(list(versions.iterdir())) >= 6, proc, 240, "a few committed chunks")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()

    partial = EmbeddingStore.open(store)
    ids = [r["id"] for r in partial.rows(columns=["id"])]
    assert 0 < len(ids) < total, "embed finished before the kill: use more images"
    assert len(ids) == len(set(ids))
    # the partial store is usable in between
    code_, stdout, err = cli("search", store, "--id", ids[0], "--json", "-k", "3")
    assert code_ == 0, err
    assert len(json.loads(stdout)) == min(3, len(ids) - 1)

    code_, stdout, err = cli("embed", data, "--model", "tiny_cnn", "--store", store, "--json", "-q")
    assert code_ == 0, err
    report = json.loads(stdout)
    assert report["added"] == total - len(ids) and report["unchanged"] == len(ids)
    rows = EmbeddingStore.open(store).rows(columns=["id", "relpath"])
    assert len(rows) == total == len({r["id"] for r in rows})
    assert {r["relpath"] for r in rows} == {p.relative_to(data).as_posix() for p in data.rglob("*.*")}
