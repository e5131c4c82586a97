"""Training in 2 CPU processes (torchrun, gloo) on the bundled sample with tiny_cnn, against one process.

Each test launches real processes (``python -m torch.distributed.run`` or ``transferkit train --nproc 2``),
one thread each. With fp32, no augmentation and frozen BatchNorm statistics the only difference
between 2 processes and 1 is the order of the gradient sums, so losses agree to ~1e-6.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from transferkit.cli.pipeline_cmds import sample_data_path
from transferkit.training.model import load_model
from transferkit.training.trainer import train

pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[2] / "src"
#: Deterministic settings under which one process and two agree up to summation order.
OPTIONS = {"model": "tiny_cnn", "batch_size": 8, "num_workers": 0, "head_init": "random", "augment": False,
           "freeze_bn": True, "head_lr": 0.05, "backbone_lr": 0.01, "precision": "fp32"}


def _flags(**options) -> list[str]:
    out = []
    for k, v in options.items():
        flag = "--" + k.replace("_", "-")
        out += ([flag] if v else ["--no-" + flag[2:]]) if isinstance(v, bool) else [flag, str(v)]
    return out


def _env(extra_path: Path | None = None) -> dict[str, str]:
    path = [str(SRC)] + ([str(extra_path)] if extra_path else []) + [os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p), "OMP_NUM_THREADS": "1"}


def _run(argv: list[str], *, env=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env or _env(), timeout=timeout)


def _history(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "history.csv").open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _assert_same_losses(a: Path, b: Path, tol: float = 1e-4) -> None:
    ha, hb = _history(a), _history(b)
    assert [r["epoch"] for r in ha] == [r["epoch"] for r in hb]
    for ra, rb in zip(ha, hb):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert ra[key] == pytest.approx(rb[key], abs=tol), (key, ra, rb)


@pytest.fixture(scope="module")
def sample() -> Path:
    return sample_data_path()


# (partial fine-tuning is compared with one process by the two resume tests below)
@pytest.mark.parametrize("strategy,epochs,head_init", [("gradual", 3, "fit"), ("feature-extraction", 2, "random")])
def test_two_processes_match_one_with_the_same_global_batch(sample, tmp_path, strategy, epochs, head_init):
    """torchrun -m transferkit train: the same losses as one process. Gradual crosses two stage boundaries (DDP is
    rebuilt over the newly trainable stages) from a head fitted on features both processes computed a half of;
    feature extraction trains the head in DDP on the gathered cached features."""
    opts = {**OPTIONS, "strategy": strategy, "epochs": epochs, "frozen_epochs": 1, "head_init": head_init}
    one = train(sample, out=tmp_path / "one", quiet=True, **opts)
    r = _run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "transferkit", "train",
              str(sample), "--out", str(tmp_path / "two"), "--quiet", *_flags(**opts)])
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_losses(tmp_path / "two", one.path)
    model, _ = load_model(tmp_path / "two")  # strict load in this single process: no "module." prefix
    assert not any(k.startswith("module.") for k in model.state_dict())


def _killer(folder: Path) -> Path:
    """A sitecustomize that makes rank 1 die (SIGKILL) right after epoch 1's checkpoint."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent("""
        import os
        if os.environ.get("RANK") == "1":
            import signal
            from transferkit.training import trainer

            real = trainer._Trainer._checkpoint

            def _checkpoint(self, epoch):
                real(self, epoch)
                if epoch >= 1:
                    os.kill(os.getpid(), signal.SIGKILL)

            trainer._Trainer._checkpoint = _checkpoint
    """))
    return folder


def test_a_killed_process_fails_the_job_cleanly_and_it_resumes_on_one(sample, tmp_path):
    out = tmp_path / "run"
    opts = {**OPTIONS, "strategy": "partial", "epochs": 3}
    r = _run(["-m", "transferkit", "train", str(sample), "--out", str(out), "--nproc", "2", "--quiet", *_flags(**opts)],
             env=_env(_killer(tmp_path / "hook")))
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr  # the survivor's lost connection is one line too
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("Error: Training process 1 of 2 failed (killed by SIGKILL)") and "--resume" in last, r.stderr
    state = torch.load(out / "checkpoint.pt", weights_only=True)  # intact: written before rank 1 died
    assert state["epoch"] == 1 and not any(k.startswith("module.") for k in state["model"])

    resumed = train(sample, out=out, resume=True, quiet=True)  # the 2-process run continues in 1 process
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    whole = train(sample, out=tmp_path / "whole", quiet=True, **opts)
    _assert_same_losses(out, whole.path)


def test_a_one_process_run_resumes_on_two(sample, tmp_path, stop_after_epoch):
    opts = {**OPTIONS, "strategy": "partial", "epochs": 2}
    with pytest.raises(KeyboardInterrupt):
        train(sample, out=tmp_path / "cut", progress=stop_after_epoch(1), **opts)
    r = _run(["-m", "transferkit", "train", str(sample), "--out", str(tmp_path / "cut"), "--resume", "--nproc", "2",
              "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    whole = train(sample, out=tmp_path / "whole", quiet=True, **opts)
    _assert_same_losses(tmp_path / "cut", whole.path)
