"""CLI: models, train, evaluate, predict and their error messages, driven in-process."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from transferkit.cli import main
from transferkit.errors import DataNotFoundError

TRAIN = ["--model", "tiny_cnn", "--epochs", "2", "--batch-size", "8", "--head-lr", "0.05", "--workers", "0", "--quiet"]


def _json(capsys):
    out = capsys.readouterr().out
    return json.loads(out)


def _error(capsys, argv: list[str]) -> str:
    """Run ``argv``, expect exit code 2 and a one-line ``Error:`` on stderr; return that line."""
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), captured.err
    return lines[0]


@pytest.fixture(scope="module")
def trained(split_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", str(split_data), "--strategy", "feature-extraction", "--out", str(out), *TRAIN]) == 0
    return out


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("models", "train", "evaluate", "predict", "compare"):
        assert cmd in out
    assert main(["train", "--help"]) == 0
    assert "--unfreeze-stages" in capsys.readouterr().out


def test_help_is_fast_and_does_not_import_torch():
    code = ("import sys, time\nt = time.perf_counter()\nfrom transferkit.cli import main\nrc = main(['--help'])\n"
            "print('RESULT', rc, 'torch' in sys.modules, time.perf_counter() - t)\n")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - t0
    rc, has_torch, seconds = proc.stdout.split("RESULT ")[1].split()
    assert rc == "0" and has_torch == "False"
    assert float(seconds) < 2.0 and wall < 2.0 + 2.0  # interpreter start-up allowed on a busy machine


def test_models_all_json_lists_tiny_cnn(capsys):
    assert main(["models", "--all", "--json"]) == 0
    rows = {r["name"]: r for r in _json(capsys)}
    assert rows["tiny_cnn"]["embedding_dim"] == 32 and rows["tiny_cnn"]["input_size"] == 32
    assert rows["tiny_cnn"]["offline"] is True and rows["tiny_cnn"]["source"] == "test"
    assert rows["resnet18"]["embedding_dim"] == 512 and rows["efficientnet_lite0"]["embedding_dim"] == 1280
    assert main(["models", "--json"]) == 0
    assert "tiny_cnn" not in {r["name"] for r in _json(capsys)}


def test_train_json(split_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(split_data), "--strategy", "partial", "--out", str(out), "--json", *TRAIN]) == 0
    res = _json(capsys)
    assert set(res) == {"val_accuracy", "val_loss", "best_epoch", "train_seconds", "skipped_files", "strategy", "run"}
    assert res["val_accuracy"] >= 0.9 and res["run"] == str(out)
    assert res["strategy"] == {"name": "partial", "unfreeze_stages": 1}
    assert (out / "model.safetensors").exists()


def test_train_text_output(trained, capsys):
    # the module fixture already trained; --resume of a finished run prints the same summary
    assert main(["train", "unused", "--out", str(trained), "--resume", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("val_accuracy 1.0000") and f"Run: {trained}" in out


def test_evaluate_json(trained, split_data, capsys):
    assert main(["evaluate", str(trained), str(split_data), "--json"]) == 0
    res = _json(capsys)
    assert res["split"] == "val" and res["num_images"] == 12 and res["accuracy"] >= 0.9
    assert len(res["confusion_matrix"]) == 3


def test_predict_json(trained, split_data, capsys):
    assert main(["predict", str(trained), str(split_data / "val" / "green"), "--top-k", "2", "--json"]) == 0
    res = _json(capsys)
    assert len(res) == 4
    assert all(r["predictions"][0]["label"] == "green" and len(r["predictions"]) == 2 for r in res)


def test_error_missing_data_folder(tmp_path, capsys):
    line = _error(capsys, ["train", str(tmp_path / "nope"), "--out", str(tmp_path / "run"), *TRAIN])
    assert line.startswith("Error: Dataset folder not found:")


def test_error_unknown_model(split_data, tmp_path, capsys):
    line = _error(capsys, ["train", str(split_data), "--out", str(tmp_path / "r"), *TRAIN, "--model", "resnet81"])
    assert "Unknown model 'resnet81'. Did you mean 'resnet18'" in line


def test_error_unknown_strategy(split_data, tmp_path, capsys):
    line = _error(capsys, ["train", str(split_data), "--out", str(tmp_path / "r"), *TRAIN, "--strategy", "fulll"])
    assert "Unknown strategy 'fulll'. Did you mean 'full'?" in line


def test_error_bad_weights_file(split_data, tmp_path, capsys):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"garbage")
    line = _error(capsys, ["train", str(split_data), "--out", str(tmp_path / "r"), *TRAIN, "--weights", str(bad)])
    assert line.startswith("Error: Cannot read weights file") and "not a valid safetensors file" in line
    line = _error(capsys, ["train", str(split_data), "--out", str(tmp_path / "r"), *TRAIN, "--weights", str(tmp_path / "x.pth")])
    assert line.startswith("Error: Weights file not found:")


def test_error_resume_without_a_run(tmp_path, capsys):
    line = _error(capsys, ["train", "data", "--out", str(tmp_path / "none"), "--resume", "--quiet"])
    assert "Nothing to resume" in line


def test_error_evaluate_missing_run(split_data, tmp_path, capsys):
    line = _error(capsys, ["evaluate", str(tmp_path / "norun"), str(split_data)])
    assert line.startswith("Error: Run directory not found")


@pytest.mark.parametrize("argv", [["train"], ["no-such-command"], ["train", "data", "--epochs", "0"],
                                  ["train", "data", "--resume"]], ids=["missing-arg", "unknown-cmd", "bad-value", "resume-no-out"])
def test_usage_errors_exit_2_without_traceback(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Error" in err and "Traceback" not in err
    if "--resume" in argv:
        assert "--resume needs --out RUN_DIR" in err


def test_debug_reraises(tmp_path):
    with pytest.raises(DataNotFoundError):
        main(["--debug", "train", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), *TRAIN])


def _entrypoint(argv: list[str], prelude: str = "") -> subprocess.CompletedProcess:
    code = f"import sys\n{prelude}\nfrom transferkit.cli import entrypoint\nsys.argv = ['transferkit'] + {argv!r}\nentrypoint()\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_console_entrypoint_keeps_output_and_exit_code_when_it_skips_teardown(tmp_path):
    """The console script ends with os._exit after flushing: the JSON on a pipe is whole, the codes are kept."""
    ok = _entrypoint(["models", "--all", "--json"])
    assert ok.returncode == 0, ok.stderr
    names = [m["name"] for m in json.loads(ok.stdout)]
    assert "tiny_cnn" in names and "efficientnet_lite0" in names
    bad = _entrypoint(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), *TRAIN])
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("Error: ") and "Traceback" not in bad.stderr
    # a line logged just before the end reaches stderr (logging is shut down and flushed before exit)
    logged = _entrypoint(["models", "--json"], prelude="import logging\nlogging.basicConfig()\n"
                         "import transferkit.cli._app as a\n_orig = a.main\n"
                         "a.main = lambda *x: (_orig(*x), logging.getLogger('t').warning('LAST-LINE'))[0]\n")
    assert logged.returncode == 0 and "LAST-LINE" in logged.stderr
    # and the teardown really is skipped: an exit handler (as PyTorch registers) does not run
    marker = tmp_path / "teardown-ran"
    skipped = _entrypoint(["models", "--json"], prelude=f"import atexit, pathlib\natexit.register(pathlib.Path({str(marker)!r}).write_text, 'x')\n")
    assert skipped.returncode == 0 and not marker.exists()
    # ... except under a profiler, which writes its data at exit
    script = tmp_path / "run_cli.py"
    script.write_text("import sys\nfrom transferkit.cli import entrypoint\nsys.argv = ['transferkit', 'models', '--json']\nentrypoint()\n")
    prof = tmp_path / "cli.prof"
    profiled = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), str(script)], capture_output=True, text=True, timeout=120)
    assert profiled.returncode == 0, profiled.stderr
    assert prof.exists() and prof.stat().st_size > 0


def test_console_entrypoint_waits_for_a_running_non_daemon_thread(tmp_path):
    """A non-daemon thread still working when the command returns keeps the ordinary exit, which waits for it."""
    marker = tmp_path / "thread-finished"
    prelude = ("import threading, time, pathlib\n"
               f"threading.Thread(target=lambda: (time.sleep(1.0), pathlib.Path({str(marker)!r}).write_text('done'))).start()\n")
    proc = _entrypoint(["models", "--json"], prelude=prelude)
    assert proc.returncode == 0, proc.stderr
    assert marker.read_text() == "done"


# -- exit codes: 2 for the user's own mistake, 1 for a runtime failure ------------------------------


def _one_line_error(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in err, err
    return code, lines[0]


def test_a_corrupt_store_exits_1(tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    (store / "transferkit_store.json").write_text("{ not json", encoding="utf-8")
    code, line = _one_line_error(capsys, ["plot", str(store), "--out", str(tmp_path / "p.png")])
    assert code == 1 and line.startswith(f"Error: Corrupt store metadata {store / 'transferkit_store.json'}")
    assert "Embed the images into a new store." in line


def test_a_corrupt_run_exits_1(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{ not json", encoding="utf-8")
    code, line = _one_line_error(capsys, ["train", "data", "--out", str(run), "--resume", "--quiet"])
    assert code == 1 and "corrupt config.json" in line and "Start a new run." in line


def test_a_missing_store_is_the_users_mistake_and_exits_2(tmp_path, capsys):
    code, line = _one_line_error(capsys, ["plot", str(tmp_path / "nope"), "--out", str(tmp_path / "p.png")])
    assert code == 2 and line.startswith("Error: Embedding store not found:")


# -- library messages name parameters; the CLI shows its flags ------------------------------------


@pytest.mark.parametrize(("message", "shown"), [
    ("`top_k` must be a positive integer; got 0.", "Error: --top-k must be a positive integer; got 0."),
    ("Raise `max_points` or set `seed`.", "Error: Raise --max-points or set --seed."),
    ("`frobnicate` is not a flag of any command.", "Error: frobnicate is not a flag of any command."),
    ("Colour by `color`, not by `vector` or `2x`.", "Error: Colour by --color, not by vector or `2x`."),
])
def test_backticked_parameter_names_are_shown_as_flags(tmp_path, capsys, monkeypatch, message, shown):
    import transferkit as tk

    def fail(method):
        raise tk.ConfigError(message)

    monkeypatch.setattr(tk, "check_projection_method", fail)  # the plot command's first library call
    code, line = _one_line_error(capsys, ["plot", str(tmp_path / "store"), "--out", str(tmp_path / "p.png")])
    assert code == 2 and line == shown


def test_as_flags_knows_the_flags_of_every_command():
    from transferkit.cli._app import _register_commands, as_flags

    _register_commands()
    assert as_flags("`batch_size`, `unfreeze_stages`, `perplexity`, `thumbnails`") == \
        "--batch-size, --unfreeze-stages, --perplexity, --thumbnails"
    assert as_flags("no backticks here: top_k") == "no backticks here: top_k"


def test_progress_messages_show_flags_too(capsys):
    from transferkit.cli._common import renderer
    from transferkit.events import Event

    renderer()(Event("warning", message="Hint: raise `max_points` to use more."))
    assert capsys.readouterr().err.strip() == "Warning: Hint: raise --max-points to use more."
    assert renderer(quiet=True) is None
