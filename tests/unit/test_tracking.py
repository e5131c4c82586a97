"""Experiment tracking against the real libraries: TensorBoard event files read back, MLflow's SQLite store queried."""

from __future__ import annotations

import csv
import json
import sqlite3
import sys
from pathlib import Path

import pytest

import transferkit as tk
from transferkit.cli import main
from transferkit.tracking import Tracker, flatten_params, make_tracker
from transferkit.tracking.tensorboard_tracker import scalar_tag

pytest.importorskip("tensorboard", reason="the test extra has tensorboard")
pytest.importorskip("mlflow", reason="the test extra has mlflow-skinny")

FAST = {"model": "tiny_cnn", "num_workers": 0, "quiet": True, "head_lr": 0.05, "backbone_lr": 0.01, "batch_size": 8,
        "head_init": "random"}


def _history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _images_and_texts(log_dir: Path) -> tuple[list[str], list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    return acc.Tags()["images"], acc.Tags()["tensors"]


@pytest.fixture(scope="module")
def tb_run(split_data, tmp_path_factory):
    return tk.train(split_data, strategy="partial", epochs=3, out=tmp_path_factory.mktemp("tb") / "run",
                    tracker="tensorboard", **FAST)


@pytest.fixture(scope="module")
def mlflow_run(split_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    run = tk.train(split_data, strategy="partial", epochs=2, out=root / "run", tracker="mlflow", **FAST)
    return root, run


def _db(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(root / "mlruns.db")


# -- TensorBoard ---------------------------------------------------------------------------------


def test_tensorboard_event_file_holds_every_epoch_and_lr(tb_run):
    log_dir = tb_run.path / "tensorboard"
    assert list(log_dir.glob("events.out.tfevents.*"))
    scalars = _scalars(log_dir)
    history = _history(tb_run.path)
    assert [s for s, _ in scalars["val/accuracy"]] == [1, 2, 3]
    for (step, value), row in zip(scalars["val/accuracy"], history):
        assert step == int(row["epoch"]) and value == pytest.approx(float(row["val_accuracy"]), abs=1e-6)
    for (_, value), row in zip(scalars["train/loss"], history):
        assert value == pytest.approx(float(row["train_loss"]), rel=1e-5)
    # the cosine schedule: each group's LR logged for the epoch it was used in, falling
    head_lrs = [v for _, v in scalars["lr/head"]]
    assert head_lrs[0] == pytest.approx(0.05) and head_lrs[0] > head_lrs[1] > head_lrs[2] > 0
    assert [v for _, v in scalars["lr/backbone"]][0] == pytest.approx(0.01)
    assert scalars["final/best_val_accuracy"][0][1] == pytest.approx(tb_run.metrics["val_accuracy"], abs=1e-6)


def test_tensorboard_has_confusion_matrix_params_and_hparams(tb_run):
    images, texts = _images_and_texts(tb_run.path / "tensorboard")
    assert "confusion_matrix" in images
    assert {"params/text_summary", "confusion_matrix/text_summary", "artefacts/text_summary"} <= set(texts)
    assert json.loads((tb_run.path / "tracking.json").read_text())["tracker"] == "tensorboard"


def test_scalar_tags():
    assert scalar_tag("train_loss") == "train/loss" and scalar_tag("val_accuracy") == "val/accuracy"
    assert scalar_tag("lr_backbone") == "lr/backbone" and scalar_tag("seconds") == "epoch/seconds"


def test_tensorboard_uri_folder_gets_a_fresh_subfolder_per_run(split_data, tmp_path):
    logs = tmp_path / "logs"
    for i in range(2):
        tk.train(split_data, strategy="feature-extraction", epochs=1, out=tmp_path / f"r{i}" / "run", tracker="tensorboard",
                 tracker_uri=str(logs), experiment="exp", **FAST)
    assert sorted(p.name for p in (logs / "exp").iterdir()) == ["run", "run-2"]
    assert all(_scalars(d)["val/accuracy"] for d in (logs / "exp").iterdir())


# -- MLflow --------------------------------------------------------------------------------------


def test_mlflow_sqlite_store_has_params_metrics_and_status(mlflow_run):
    root, run = mlflow_run
    con = _db(root)
    (run_uuid, status, name), = con.execute("select run_uuid, status, name from runs").fetchall()
    assert status == "FINISHED" and name == "run"
    params = dict(con.execute("select key, value from params where run_uuid = ?", (run_uuid,)).fetchall())
    assert params["model"] == "tiny_cnn" and params["strategy"] == "partial" and params["epochs"] == "2"
    assert params["num_classes"] == "3"
    metrics = con.execute("select key, step, value from metrics where run_uuid = ?", (run_uuid,)).fetchall()
    by_key: dict[str, dict[int, float]] = {}
    for key, step, value in metrics:
        by_key.setdefault(key, {})[step] = value
    history = _history(run.path)
    assert sorted(by_key["val_accuracy"]) == [1, 2]
    for row in history:
        assert by_key["val_accuracy"][int(row["epoch"])] == pytest.approx(float(row["val_accuracy"]), abs=1e-6)
        assert by_key["train_loss"][int(row["epoch"])] == pytest.approx(float(row["train_loss"]), rel=1e-5)
    assert by_key["lr_head"][1] == pytest.approx(0.05) and by_key["lr_head"][2] < by_key["lr_head"][1]
    assert list(by_key["best_val_accuracy"].values()) == [pytest.approx(run.metrics["val_accuracy"])]
    assert list(by_key["macro_f1"].values()) == [pytest.approx(run.metrics["macro_f1"])]


def test_mlflow_artifacts_hold_the_model_and_confusion_matrix(mlflow_run):
    root, run = mlflow_run
    (artifact_uri,), = _db(root).execute("select artifact_uri from runs").fetchall()
    assert artifact_uri.startswith("file://")
    folder = Path(artifact_uri[len("file://"):])
    assert folder.is_relative_to(root / "mlartifacts")
    assert (folder / "model" / "model.safetensors").read_bytes() == (run.path / "model.safetensors").read_bytes()
    assert json.loads((folder / "confusion_matrix.json").read_text())["matrix"] == run.metrics["confusion_matrix"]
    assert (folder / "confusion_matrix.png").stat().st_size > 0 and (folder / "history.csv").is_file()


def test_mlflow_resume_continues_the_same_tracked_run(split_data, tmp_path):
    out = tmp_path / "run"
    cfg = {**{k: v for k, v in FAST.items() if k != "quiet"}, "strategy": "partial", "tracker": "mlflow", "epochs": 3}

    def stop_after_epoch_2(event):
        if event.kind == "message" and event.data.get("epoch") == 2 and "val_accuracy" in event.data:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tk.train(split_data, out=out, progress=stop_after_epoch_2, **cfg)
    con = _db(tmp_path)
    assert [s for (s,) in con.execute("select status from runs")] == ["KILLED"]
    tk.train(split_data, out=out, resume=True, progress=lambda e: None, **cfg)
    runs = con.execute("select run_uuid, status from runs").fetchall()
    assert len(runs) == 1 and runs[0][1] == "FINISHED"
    steps = sorted(s for (s,) in con.execute("select step from metrics where key = 'val_accuracy'"))
    assert steps in ([1, 2, 3], [1, 2, 2, 3])  # epoch 2 may be logged again if the kill came before its checkpoint
    assert json.loads((out / "tracking.json").read_text())["run_id"] == runs[0][0]


def test_mlflow_user_uri_and_experiment(split_data, tmp_path):
    db = tmp_path / "elsewhere" / "track.db"
    tk.train(split_data, strategy="feature-extraction", epochs=1, out=tmp_path / "run", tracker="mlflow",
             tracker_uri=f"sqlite:///{db}", experiment="flowers", **FAST)
    names = [n for (n,) in sqlite3.connect(db).execute("select name from experiments")]
    assert "flowers" in names
    assert not (tmp_path / "mlruns.db").exists()


# -- failures ------------------------------------------------------------------------------------


def test_unknown_tracker_and_bad_options_fail_before_training(split_data, tmp_path):
    with pytest.raises(tk.UnknownNameError, match="tensorboard"):
        tk.train(split_data, out=tmp_path / "a", tracker="tensorbord", **FAST)
    with pytest.raises(tk.ConfigError, match="`tracker_uri` .* is set but no tracker is"):
        tk.train(split_data, out=tmp_path / "b", tracker_uri="sqlite:///x.db", **FAST)
    with pytest.raises(tk.ConfigError, match="`experiment` must be a non-empty name"):
        tk.train(split_data, out=tmp_path / "c", tracker="mlflow", experiment=" ", **FAST)
    assert not any((tmp_path / n).exists() for n in "abc")


def test_missing_extra_is_a_one_line_error(split_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(tk.MissingDependencyError, match=r"pip install 'transferkit\[mlflow\]'"):
        make_tracker("mlflow")
    code = main(["train", str(split_data), "--model", "tiny_cnn", "--out", str(tmp_path / "run"), "--tracker", "mlflow",
                 "--num-workers", "0", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'transferkit[mlflow]'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_unusable_mlflow_uri_is_a_config_error(split_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(tk.ConfigError, match="Cannot open the MLflow tracking store"):
        tk.train(split_data, out=tmp_path / "run", tracker="mlflow", tracker_uri=f"sqlite:///{blocker}/sub/x.db", **FAST)


class _Flaky(Tracker):
    """Fails on the second epoch, and records what it saw."""

    name = "flaky"
    title = "Flaky"

    def __init__(self):
        super().__init__()
        self.epochs, self.closed = [], []

    def _log_epoch(self, step, metrics):
        if step == 2:
            raise OSError("disk full")
        self.epochs.append(step)

    def _close(self, status):
        self.closed.append(status)


def test_a_tracker_failure_warns_and_training_goes_on(split_data, tmp_path, monkeypatch):
    import transferkit.training.trainer as trainer

    flaky = _Flaky()
    monkeypatch.setattr(trainer, "open_tracker", lambda cfg, out, reporter=None: (flaky.open(out, reporter=reporter), flaky)[1])
    events = []
    run = tk.train(split_data, strategy="partial", epochs=3, out=tmp_path / "run", progress=events.append,
                   **{k: v for k, v in FAST.items() if k != "quiet"})
    assert len(run.history) == 3 and (run.path / "model.safetensors").is_file()
    assert flaky.epochs == [1] and flaky.closed == ["FINISHED"]  # nothing logged after the failure; still closed
    warnings = [e for e in events if e.kind == "warning" and "Flaky logging failed (OSError: disk full)" in e.message]
    assert len(warnings) == 1


def test_a_failed_training_closes_the_tracked_run_as_failed(split_data, tmp_path, monkeypatch):
    import transferkit.training.trainer as trainer

    flaky = _Flaky()
    monkeypatch.setattr(trainer, "open_tracker", lambda cfg, out, reporter=None: (flaky.open(out, reporter=reporter), flaky)[1])
    monkeypatch.setattr(trainer._Trainer, "_run_epoch", lambda self, epoch: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        tk.train(split_data, strategy="partial", epochs=2, out=tmp_path / "run", **FAST)
    assert flaky.closed == ["FAILED"]


def test_flatten_params_nests_sections_and_cuts_long_values():
    flat = flatten_params({"config": {"model": "m", "epochs": 3}, "strategy": {"name": "partial", "unfreeze": 1},
                           "classes": ["a", "b"], "groups": [{"name": "head"}], "long": "x" * 10})
    assert flat["model"] == "m" and flat["epochs"] == "3" and flat["strategy.name"] == "partial"
    assert flat["num_classes"] == "2" and json.loads(flat["classes"]) == ["a", "b"]
    assert flatten_params({"long": "x" * 10}, max_length=6)["long"] == "xxx..."


def test_compare_cli_tracks_each_strategy_as_a_run(split_data, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(split_data), "--model", "tiny_cnn", "--epochs", "1", "--batch-size", "8", "--out", str(out),
                 "--tracker", "mlflow", "--experiment", "cmp", "-q"]) == 0
    db = sqlite3.connect(out / "mlruns.db")
    rows = db.execute("select r.name, r.status from runs r join experiments e on r.experiment_id = e.experiment_id "
                      "where e.name = 'cmp'").fetchall()
    assert sorted(rows) == [("feature-extraction", "FINISHED"), ("full", "FINISHED"), ("partial", "FINISHED")]
