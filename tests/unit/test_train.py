"""Training on synthetic colour data with tiny_cnn: run files, learning, fast path, seeds, resume, runs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transferkit.errors import ConfigError, CorruptRunError, DataError, DataNotFoundError, RunError, UnknownNameError
from transferkit.inference import policy as accel
from transferkit.training.compare import compare
from transferkit.training.model import load_model
from transferkit.training.run import Run, load_run
from transferkit.training.trainer import train

#: Fast, deterministic settings for tiny_cnn on 32x32 colour blobs (AdamW at 1e-3 barely moves in 3 epochs).
# Epoch mechanics are tested on a random head trained by SGD; the fitted head (the default) has its own tests below.
FAST = {"model": "tiny_cnn", "num_workers": 0, "quiet": True, "head_lr": 0.05, "backbone_lr": 0.01, "batch_size": 8,
        "head_init": "random"}

RUN_FILES = ("model.safetensors", "model.json", "metrics.json", "history.csv", "confusion_matrix.png", "config.json",
             "checkpoint.pt")


@pytest.fixture(scope="module")
def fe_run(split_data, tmp_path_factory) -> Run:
    """Feature extraction (cached fast path), 3 epochs; an empty conversion cache, so `auto` stays on torch."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERKIT_CACHE", str(tmp_path_factory.mktemp("fe-cache")))
        return train(split_data, strategy="feature-extraction", epochs=3, out=tmp_path_factory.mktemp("fe") / "run", **FAST)


@pytest.fixture(scope="module")
def partial_run(split_data, tmp_path_factory) -> Run:
    """Partial fine-tuning (image path, augmentation), 3 epochs."""
    return train(split_data, strategy="partial", epochs=3, out=tmp_path_factory.mktemp("partial") / "run", **FAST)


def _losses(run: Run) -> list[tuple[float, float]]:
    return [(h["train_loss"], h["val_loss"]) for h in run.history]


# -- run directory ------------------------------------------------------------------------------


def test_run_dir_has_every_file_with_sane_contents(fe_run):
    for f in RUN_FILES:
        assert (fe_run.path / f).is_file() and (fe_run.path / f).stat().st_size > 0, f
    metrics = json.loads((fe_run.path / "metrics.json").read_text())
    for key in ("val_accuracy", "val_loss", "per_class", "train_seconds", "skipped_files", "best_epoch", "confusion_matrix"):
        assert key in metrics, key
    assert set(metrics["per_class"]) == {"blue", "green", "red"}
    assert all(v["support"] == 4 for v in metrics["per_class"].values())
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
    assert metrics["train_seconds"] > 0 and metrics["skipped_files"] == 0 and metrics["epochs_run"] == 3
    assert metrics["strategy"] == {"name": "feature-extraction"}
    assert metrics["parameters"]["trainable"] == 32 * 3 + 3
    assert metrics["parameters"]["groups"] == [{"name": "head", "lr": 0.05, "params": 99}]

    with (fe_run.path / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr_head", "lr_backbone", "seconds", "train_seconds",
            "val_seconds", "images_per_s"} <= set(rows[0])
    for r in rows:  # the epoch is the training phase plus validation; throughput is over the training phase
        assert abs(float(r["train_seconds"]) + float(r["val_seconds"]) - float(r["seconds"])) < 1e-3 * float(r["seconds"]) + 1e-5
        assert float(r["train_seconds"]) < float(r["seconds"])
    seen = {round(float(r["images_per_s"]) * float(r["train_seconds"])) for r in rows}
    assert len(seen) == 1 and seen.pop() > 0  # every epoch sees the whole training split
    assert float(rows[0]["lr_head"]) == pytest.approx(0.05)

    meta = json.loads((fe_run.path / "model.json").read_text())
    assert meta["backbone"] == "tiny_cnn" and meta["weights"] == "synthetic-seed0"
    assert meta["classes"] == ["blue", "green", "red"] and meta["num_classes"] == 3
    assert meta["preprocessing"] == {"input_size": 32, "resize_size": 36, "interpolation": "bilinear",
                                     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert meta["strategy"] == {"name": "feature-extraction"}

    config = json.loads((fe_run.path / "config.json").read_text())
    assert config["resolved_strategy"] == "feature-extraction" and config["config"]["epochs"] == 3
    assert torch.load(fe_run.path / "checkpoint.pt", weights_only=True) == {"finished": True, "epoch": 3}
    from PIL import Image

    assert Image.open(fe_run.path / "confusion_matrix.png").format == "PNG"


def test_learns_separable_data(fe_run, partial_run):
    assert fe_run.metrics["val_accuracy"] >= 0.9
    assert partial_run.metrics["val_accuracy"] >= 0.9
    h = fe_run.history
    assert h[-1]["train_loss"] < h[0]["train_loss"]


def test_partial_run_records_both_lr_groups(partial_run):
    groups = {g["name"]: g for g in partial_run.metrics["parameters"]["groups"]}
    assert groups["head"]["lr"] == 0.05 and groups["backbone"]["lr"] == 0.01
    assert groups["backbone"]["params"] == 16 * 32 * 9 + 2 * 32  # stage2 conv + BN
    lr = [h["lr_backbone"] for h in partial_run.history]
    assert lr[0] == pytest.approx(0.01) and lr[0] > lr[1] > lr[2]  # cosine schedule per epoch


def test_best_epoch_is_kept(fe_run, split_data):
    m, h = fe_run.metrics, fe_run.history
    best = m["best_epoch"]
    accs = [r["val_accuracy"] for r in h]
    assert best == accs.index(max(accs)) + 1  # first epoch with the best accuracy
    assert m["val_accuracy"] == pytest.approx(h[best - 1]["val_accuracy"])
    assert m["val_loss"] == pytest.approx(h[best - 1]["val_loss"], rel=1e-5)
    if best < len(h):
        assert m["val_loss"] != pytest.approx(h[-1]["val_loss"], rel=1e-5)
    assert fe_run.evaluate(split_data, num_workers=0)["loss"] == pytest.approx(h[best - 1]["val_loss"], rel=1e-4)


def test_cached_fast_path_equals_slow_path(split_data, tmp_path):
    # Same precision on both paths (``auto`` may pick bf16 for the cached features; see the next test).
    fe_run = train(split_data, strategy="feature-extraction", epochs=3, out=tmp_path / "fast", precision="fp32", **FAST)
    assert fe_run.metrics["inference"]["precision"] == "fp32"
    slow = train(split_data, strategy="feature-extraction", epochs=3, out=tmp_path / "slow", feature_cache=False,
                 augment=False, precision="fp32", **FAST)
    for (a_tr, a_va), (b_tr, b_va) in zip(_losses(fe_run), _losses(slow)):
        assert a_tr == pytest.approx(b_tr, abs=1e-4) and a_va == pytest.approx(b_va, abs=1e-4)
    a, b = load_file(str(fe_run.path / "model.safetensors")), load_file(str(slow.path / "model.safetensors"))
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=0)
    assert slow.metrics["val_loss"] == pytest.approx(fe_run.metrics["val_loss"], abs=1e-4)


def test_seeded_runs_are_reproducible(partial_run, split_data, tmp_path):
    again = train(split_data, strategy="partial", epochs=3, out=tmp_path / "again", **FAST)
    assert _losses(again) == _losses(partial_run)
    other = train(split_data, strategy="partial", epochs=1, seed=1, out=tmp_path / "other", **FAST)
    assert _losses(other)[0] != _losses(partial_run)[0]


# -- resume ---------------------------------------------------------------------------------------

_KILL_AFTER_EPOCH_1 = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    import transferkit.training.trainer as T
    original = T._Trainer._checkpoint
    def checkpoint_then_die(self, epoch, *args, **kwargs):
        original(self, epoch, *args, **kwargs)
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard crash right after the epoch-1 checkpoint
    T._Trainer._checkpoint = checkpoint_then_die
    T.train(sys.argv[1], out=sys.argv[2], strategy=sys.argv[3], epochs=3, **{FAST!r})
""")


@pytest.mark.parametrize("strategy", ["partial", "feature-extraction"])
def test_resume_after_sigkill_matches_an_uninterrupted_run(strategy, request, split_data, tmp_path, monkeypatch):
    reference = request.getfixturevalue("partial_run" if strategy == "partial" else "fe_run")
    # the reference ran with nothing converted, so its frozen features came from torch; so do these
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "killed"
    script = _KILL_AFTER_EPOCH_1.replace("{FAST!r}", repr(FAST))
    proc = subprocess.run([sys.executable, "-c", script, str(split_data), str(out), strategy], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    with (out / "history.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 1
    assert not (out / "metrics.json").exists()
    with pytest.raises(RunError, match="already holds a run. Resume it, or choose another output folder"):
        train(split_data, strategy=strategy, epochs=3, out=out, **FAST)

    # Meanwhile the environment changed so that `auto` would now pick OpenVINO for this many images
    # (as when another job cached the same weights' conversion): the resume repeats what the run chose.
    monkeypatch.setattr(accel, "OPENVINO_MIN_ITEMS", 1)
    resumed = train("ignored: the saved config is used", out=out, resume=True, quiet=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    if strategy == "feature-extraction":
        assert resumed.metrics["inference"]["backend"] == reference.metrics["inference"]["backend"] == "torch"
        assert resumed.metrics["inference"]["precision"] == reference.metrics["inference"]["precision"]
    for (a_tr, a_va), (b_tr, b_va) in zip(_losses(resumed), _losses(reference)):
        assert a_tr == pytest.approx(b_tr, abs=1e-5) and a_va == pytest.approx(b_va, abs=1e-5)
    assert resumed.metrics["val_loss"] == pytest.approx(reference.metrics["val_loss"], abs=1e-5)
    assert resumed.metrics["best_epoch"] == reference.metrics["best_epoch"]
    a, b = load_file(str(out / "model.safetensors")), load_file(str(reference.path / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0)


def test_resume_of_a_complete_run_is_a_no_op(fe_run):
    files = {f: ((fe_run.path / f).stat().st_mtime_ns, (fe_run.path / f).read_bytes()) for f in RUN_FILES}
    again = train("unused", out=fe_run.path, resume=True, quiet=True)
    assert again.metrics == fe_run.metrics
    assert files == {f: ((fe_run.path / f).stat().st_mtime_ns, (fe_run.path / f).read_bytes()) for f in RUN_FILES}


def test_resume_removes_the_half_written_files_of_a_killed_run(fe_run, tmp_path, caplog):
    """A run killed while saving leaves ``.checkpoint.pt.<random>.tmp``; resuming deletes it and
    leaves other files alone (the interrupt test met this when SIGKILL landed mid-save)."""
    out = tmp_path / "copy"
    shutil.copytree(fe_run.path, out)
    stale = [out / ".checkpoint.pt.k3x_9abq.tmp", out / ".model.safetensors.0aa1b2c3.tmp"]
    kept = [out / ".notes.tmp", out / "mine.tmp", out / ".checkpoint.pt.TOOLONG123.tmp"]
    for p in stale + kept:
        p.write_bytes(b"partial")
    with caplog.at_level("INFO", logger="transferkit"):
        again = train("unused", out=out, resume=True, quiet=True)
    assert again.metrics == fe_run.metrics
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert "Removed .checkpoint.pt.k3x_9abq.tmp, left by the interrupted run" in caplog.text


def test_resume_without_a_run_is_a_run_error(tmp_path):
    with pytest.raises(RunError, match=r"Nothing to resume in .*config\.json is missing\. Start a new run instead"):
        train("unused", out=tmp_path / "nothing", resume=True, quiet=True)


def test_resume_with_corrupt_checkpoint_is_a_run_error(fe_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(fe_run.path, out)
    (out / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CorruptRunError, match=r"Cannot resume .*: corrupt checkpoint\.pt") as info:
        train("unused", out=out, resume=True, quiet=True)
    assert info.value.exit_code == 1  # a damaged file is a runtime failure, not the user's call


def test_existing_run_dir_without_resume_is_a_run_error(fe_run, split_data):
    with pytest.raises(RunError, match=r"already holds a run\. Resume it, or choose another output folder\."):
        train(split_data, out=fe_run.path, **FAST)


# -- bad data and options -------------------------------------------------------------------------


def test_skipped_files_appear_in_metrics(split_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(split_data, data)
    (data / "train" / "red" / "text.jpg").write_text("not an image")  # fails the header check
    good = (data / "train" / "blue" / "img000.png").read_bytes()
    (data / "train" / "blue" / "cut.png").write_bytes(good[: len(good) // 2])  # header fine, decoding fails
    run = train(data, strategy="feature-extraction", epochs=1, out=tmp_path / "run", **FAST)
    m = run.metrics
    assert m["skipped_files"] == 2
    assert {Path(p).name for p in m["skipped"]} == {"text.jpg", "cut.png"}
    assert m["dataset"]["skipped_files"] == 2
    assert m["dataset"]["num_train"] == 37  # cut.png passes discovery, then is skipped while decoding


@pytest.mark.parametrize("kwargs, error, match", [
    ({"epochs": 0}, ConfigError, r"`epochs` must be a positive int; got 0\."),
    ({"batch_size": -1}, ConfigError, r"`batch_size` must be a positive int; got -1\."),
    ({"head_lr": 0.0}, ConfigError, r"`head_lr` must be a positive float; got 0\.0\."),
    ({"optimizer": "adamm"}, UnknownNameError, r"Unknown optimizer 'adamm'\. Did you mean 'adamw'\?"),
    ({"scheduler": "cosin"}, UnknownNameError, r"Unknown scheduler 'cosin'\. Did you mean 'cosine'\?"),
    ({"patience": 0}, ConfigError, r"`patience` must be an int >= 1"),
    ({"weight_decay": -1.0}, ConfigError, r"`weight_decay` must be >= 0"),
    ({"device": "tpu"}, ConfigError, r"Unknown device 'tpu'\. Choose from: auto, cpu, cuda, mps\."),
    ({"strategy": "ful"}, UnknownNameError, r"Unknown strategy 'ful'\. Did you mean 'full'\?"),
    ({"model": "tiny_cn"}, UnknownNameError, r"Unknown model 'tiny_cn'\."),
])
def test_bad_options_raise_before_training(split_data, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        train(split_data, out=tmp_path / "run", **{**FAST, **kwargs})
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_missing_data_folder(tmp_path):
    with pytest.raises(DataNotFoundError, match="Dataset folder not found"):
        train(tmp_path / "nope", out=tmp_path / "run", **FAST)


def test_auto_strategy_records_its_decision(split_data, tmp_path):
    run = train(split_data, strategy="auto", epochs=1, out=tmp_path / "auto", **FAST)
    auto = run.metrics["auto"]
    assert auto["num_train"] == 36 and auto["probe_samples"] == 36
    assert auto["strategy"] == run.strategy == ("feature-extraction" if not auto["is_far_domain"] else "partial")
    assert auto["reason"].startswith("36 training images (< 1,000); frozen features separate the classes")
    assert json.loads((run.path / "config.json").read_text())["resolved_strategy"] == run.strategy


def test_early_stopping(split_data, tmp_path):
    run = train(split_data, strategy="feature-extraction", epochs=6, patience=1, out=tmp_path / "es", **FAST)
    m = run.metrics
    # the colour classes are learnt in epoch 1: accuracy cannot improve, so epoch 2 stops the run
    assert m["best_epoch"] == 1 and m["epochs_run"] == 2 and m["stopped_early"] is True
    assert len(run.history) == 2


# -- Run: evaluate, predict, compare --------------------------------------------------------------


def test_evaluate_on_val(fe_run, split_data):
    res = fe_run.evaluate(split_data, num_workers=0)
    assert res["split"] == "val" and res["num_images"] == 12 and res["accuracy"] >= 0.9
    assert res["skipped_files"] == 0
    assert set(res["per_class"]) == {"blue", "green", "red"}
    with pytest.raises(DataError, match="No test/ split"):
        fe_run.evaluate(split_data, split="test", num_workers=0)


def test_evaluate_rejects_classes_the_model_does_not_know(fe_run, tmp_path, synth):
    synth.make_dataset(tmp_path, classes=("blue", "green", "red"), per_class=1, val_per_class=1)
    (tmp_path / "train" / "purple").mkdir()
    shutil.copy(tmp_path / "train" / "red" / "img000.png", tmp_path / "train" / "purple" / "x.png")
    shutil.copytree(tmp_path / "train" / "purple", tmp_path / "val" / "purple")
    with pytest.raises(DataError, match=r"classes the model was not trained on: purple\. The model knows: blue, green, red"):
        fe_run.evaluate(tmp_path, num_workers=0)


def test_predict_top_k_sorted_probabilities(fe_run, split_data):
    img = split_data / "val" / "red" / "img000.png"
    (res,) = fe_run.predict(img, top_k=2, num_workers=0)
    assert res["path"] == str(img)
    probs = [p["probability"] for p in res["predictions"]]
    assert len(probs) == 2 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
    assert res["predictions"][0]["label"] == "red"
    (full,) = fe_run.predict([img], top_k=10, num_workers=0)
    assert len(full["predictions"]) == 3
    assert sum(p["probability"] for p in full["predictions"]) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(DataError, match="`top_k` must be >= 1; got 0"):
        fe_run.predict(img, top_k=0)


def test_predict_walks_folders_and_reports_bad_files(fe_run, split_data, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(split_data / "val", folder)
    (folder / "broken.jpg").write_text("nope")
    results = fe_run.predict([folder], num_workers=0)
    assert len(results) == 13
    by_name = {Path(r["path"]).relative_to(folder).as_posix(): r for r in results}
    assert "error" in by_name["broken.jpg"] and "predictions" not in by_name["broken.jpg"]
    correct = sum(r["predictions"][0]["label"] == Path(r["path"]).parent.name for r in results if "predictions" in r)
    assert correct >= 11
    with pytest.raises(DataNotFoundError, match="Not found: .*missing.png"):
        fe_run.predict(folder / "missing.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No images found in"):
        fe_run.predict(tmp_path / "empty")


def test_load_run_and_model(fe_run):
    run = load_run(fe_run.path)
    assert run.classes == ["blue", "green", "red"] and run.strategy == "feature-extraction"
    assert "tiny_cnn" in repr(run)
    model, meta = load_model(fe_run.path)
    assert not model.training and meta["num_classes"] == 3
    with pytest.raises(RunError, match="Run directory not found"):
        load_run(fe_run.path.parent / "missing")


def test_corrupt_model_json_is_a_run_error(fe_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(fe_run.path, out)
    (out / "model.json").write_text("{not json")
    with pytest.raises(CorruptRunError, match=r"Corrupt run metadata .*model\.json") as corrupt:
        load_run(out)
    assert corrupt.value.exit_code == 1
    os.remove(out / "model.json")
    with pytest.raises(RunError, match=r"is not a transferkit run: model\.json is missing") as not_a_run:
        load_run(out)
    assert not isinstance(not_a_run.value, CorruptRunError) and not_a_run.value.exit_code == 2


def test_compare_writes_three_rows(split_data, tmp_path):
    rows = compare(split_data, model="tiny_cnn", epochs=1, out=tmp_path / "cmp", quiet=True, num_workers=0, head_lr=0.05,
                   batch_size=8)
    assert [r["strategy"] for r in rows] == ["feature-extraction", "partial", "full"]
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["model"] == "tiny_cnn" and saved["epochs"] == 1 and len(saved["results"]) == 3
    trainable = [r["trainable_params"] for r in saved["results"]]
    assert trainable[0] < trainable[1] < trainable[2] == saved["results"][2]["total_params"]
    assert all((tmp_path / "cmp" / s / "model.safetensors").exists() for s in ("feature-extraction", "partial", "full"))


# -- public API ---------------------------------------------------------------------------------


def test_auto_precision_records_its_fidelity_check_and_stays_close_to_fp32(fe_run, split_data, tmp_path):
    info = fe_run.metrics["inference"]
    assert info["backend"] == "torch"  # a small workload, and no conversion of these weights cached: no OpenVINO
    assert info["precision"] in ("fp32", "bf16")
    if info["precision"] == "bf16":
        assert info["check_min_cosine"] >= 0.999
    exact = train(split_data, strategy="feature-extraction", epochs=3, out=tmp_path / "fp32", precision="fp32",
                  backend="torch", **FAST)
    assert fe_run.metrics["val_accuracy"] == pytest.approx(exact.metrics["val_accuracy"], abs=0.05)


def test_public_train_is_the_function_even_after_importing_the_submodule():
    code = ("import transferkit.training.trainer, transferkit.workflow\nimport transferkit as tk\n"
            "assert callable(tk.train), type(tk.train)\nassert callable(tk.pipeline), type(tk.pipeline)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-500:]


@pytest.mark.parametrize("model, safe", [("efficientnet_lite0", False), ("tiny_cnn", True)])
def test_frozen_feature_runner_gets_the_registrys_bf16_safety(split_data, tmp_path, runner_bf16_flags, model, safe):
    """Feature extraction runs the frozen backbone through an InferenceRunner told whether bf16 may be tried."""
    opts = {**FAST, "model": model, "weights": "none"}
    train(split_data, strategy="feature-extraction", epochs=1, out=tmp_path / "run", **opts)
    assert runner_bf16_flags and set(runner_bf16_flags) == {safe}


# -- one config, validated once -------------------------------------------------------------------


def test_unknown_option_is_a_config_error_with_close_matches(split_data, tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown training option `epoch`\. Did you mean 'epochs'"):
        train(split_data, out=tmp_path / "run", epoch=3, **FAST)
    assert not (tmp_path / "run").exists()


def test_config_is_validated_when_built():
    from transferkit.training.config import TrainConfig

    with pytest.raises(ConfigError, match=r"`epochs` must be a positive int; got 0\."):
        TrainConfig(data="x", epochs=0)
    with pytest.raises(ConfigError, match=r"`num_workers` must be an int >= 0"):
        TrainConfig(num_workers=-1)
    with pytest.raises(UnknownNameError, match=r"Unknown strategy 'ful'"):
        TrainConfig(strategy="ful")
    assert TrainConfig(data=Path("d"), weights=Path("w.pth")).to_dict()["weights"] == "w.pth"


def test_a_config_object_with_options_on_top(split_data, tmp_path):
    from transferkit.training.config import TrainConfig

    base = TrainConfig(model="tiny_cnn", strategy="feature-extraction", epochs=4, num_workers=0, head_lr=0.05, batch_size=8)
    run = train(split_data, config=base, epochs=1, out=tmp_path / "run", quiet=True)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved == {**base.to_dict(), "data": str(split_data), "epochs": 1}
    assert len(run.history) == 1 and base.epochs == 4  # the caller's config is not changed


# -- randomness -----------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker-process"])
def test_train_leaves_the_global_rng_alone_and_does_not_depend_on_it(split_data, tmp_path, workers):
    opts = {**FAST, "num_workers": workers}
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    first = train(split_data, strategy="partial", epochs=2, out=tmp_path / "a", **opts)  # augmentation on
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(99)  # another global state: the same run
    second = train(split_data, strategy="partial", epochs=2, out=tmp_path / "b", **opts)
    assert _losses(first) == _losses(second)
    assert first.metrics["val_loss"] == second.metrics["val_loss"]


# -- events ---------------------------------------------------------------------------------------


def test_progress_goes_to_the_callback_as_events(split_data, tmp_path, capsys):
    events = []
    opts = {k: v for k, v in FAST.items() if k != "quiet"}
    run = train(split_data, strategy="partial", epochs=2, out=tmp_path / "run", progress=events.append, **opts)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    epochs = [e for e in events if e.kind == "message" and "epoch" in e.data]
    assert [e.data["epoch"] for e in epochs] == [1, 2]
    for e, row in zip(epochs, run.history):
        assert e.data["train_loss"] == pytest.approx(row["train_loss"], rel=1e-5)
        assert e.data["val_accuracy"] == pytest.approx(row["val_accuracy"])
        assert e.message.startswith(f"epoch {row['epoch']}/2  train_loss")
    assert epochs[0].data["is_best"] is True
    bars = [e for e in events if e.task == "epoch"]
    assert [e.kind for e in bars if e.kind != "advance"] == ["start", "end", "start", "end"]
    assert {e.total for e in bars} == {36} and max(e.completed for e in bars) == 36
    assert [e.description for e in bars if e.kind == "start"] == ["epoch 1/2", "epoch 2/2"]
    assert any(e.task == "evaluate" and e.kind == "end" for e in events)
    assert events[-1].message.startswith("Best epoch") and events[-1].data["run"] == str(run.path)


# -- strategy hooks and state across a resume ------------------------------------------------------


class _Interrupted(Exception):
    pass


@pytest.fixture
def gradual():
    """A strategy that unfreezes one more backbone stage at each epoch boundary from epoch 2 on."""
    from transferkit.strategies import Strategy, register_strategy, unregister_strategy

    class GradualUnfreezing(Strategy):
        name = "test-gradual"

        def __init__(self):
            self.unfrozen = 0

        def trainable_backbone_stages(self, num_stages):
            return list(range(num_stages - self.unfrozen, num_stages))

        def on_epoch_start(self, model, epoch, optimizer):
            target = min(epoch - 1, len(model.backbone.stages))
            if target == self.unfrozen:
                return False
            self.unfrozen = target
            self.on_train_start(model)
            return True

        def state_dict(self):
            return {"name": self.name, "unfrozen": self.unfrozen}

        def load_state_dict(self, state):
            super().load_state_dict(state)
            self.unfrozen = int(state["unfrozen"])

    register_strategy(GradualUnfreezing)
    yield GradualUnfreezing.name
    unregister_strategy(GradualUnfreezing.name)


def test_epoch_hook_rebuilds_the_optimizer_on_the_schedule(gradual, split_data, tmp_path):
    run = train(split_data, strategy=gradual, epochs=3, out=tmp_path / "run", **FAST)
    h = run.history
    assert h[0]["lr_backbone"] == 0.0  # epoch 1: the head only
    # the rebuilt optimizer's scheduler continues the cosine schedule where the head's is
    assert [r["lr_head"] for r in h] == pytest.approx([0.05, 0.05 * 0.75, 0.05 * 0.25])
    assert [r["lr_backbone"] for r in h[1:]] == pytest.approx([0.01 * 0.75, 0.01 * 0.25])
    groups = {g["name"]: g["params"] for g in run.metrics["parameters"]["groups"]}
    assert groups["backbone"] == (16 * 32 * 9 + 2 * 32) + (8 * 16 * 9 + 2 * 16)  # stage2 + stage1 convs and BNs
    assert torch.load(run.path / "checkpoint.pt", weights_only=True) == {"finished": True, "epoch": 3}


def test_a_resumed_run_continues_the_strategys_schedule(gradual, split_data, tmp_path, monkeypatch):
    from transferkit.training import trainer as T

    reference = train(split_data, strategy=gradual, epochs=3, out=tmp_path / "reference", **FAST)
    original = T._Trainer._checkpoint

    def checkpoint_then_stop(self, epoch):
        original(self, epoch)
        if epoch == 2:
            raise _Interrupted

    monkeypatch.setattr(T._Trainer, "_checkpoint", checkpoint_then_stop)
    out = tmp_path / "stopped"
    with pytest.raises(_Interrupted):
        train(split_data, strategy=gradual, epochs=3, out=out, **FAST)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["strategy"] == {"name": gradual, "unfrozen": 1}
    monkeypatch.setattr(T._Trainer, "_checkpoint", original)
    resumed = train("unused", out=out, resume=True, quiet=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for (a_tr, a_va), (b_tr, b_va) in zip(_losses(resumed), _losses(reference)):
        assert a_tr == pytest.approx(b_tr, abs=1e-6) and a_va == pytest.approx(b_va, abs=1e-6)
    assert resumed.metrics["parameters"] == reference.metrics["parameters"]
