"""``transferkit serve`` and the pipeline's pointer to it."""

from __future__ import annotations

import types

from transferkit.cli import main


def test_serve_command_prints_the_url(tiny_store, monkeypatch, capsys):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    assert main(["serve", str(tiny_store), "--port", "8799"]) == 0
    out = capsys.readouterr().out
    assert "Open http://127.0.0.1:8799/ " in out and "160 images" in out
    assert calls == [{"host": "127.0.0.1", "port": 8799, "log_level": "warning", "server_header": False}]
    assert main(["serve", str(tiny_store), "--host", "0.0.0.0", "--token", "abc123"]) == 0
    assert "?token=abc123" in capsys.readouterr().out


def test_serve_refuses_a_missing_store(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "Embedding store not found" in capsys.readouterr().err


def test_pipeline_summary_ends_with_the_serve_command(capsys):
    from transferkit.cli.pipeline_cmds import _print_summary

    run = types.SimpleNamespace(metrics={"val_accuracy": 0.9}, path="runs/my run", strategy="feature-extraction")
    result = types.SimpleNamespace(run=run, report_path="runs/my run/report.html", store=types.SimpleNamespace(path="runs/my run/store",
                                                                                                     uri="runs/my run/store"),
                                   retrieval={"p_at_1": 0.9, "p_at_5": 0.8, "map_at_10": 0.7}, index={"recall_at_10": 1.0},
                                   plots={}, timings={})
    _print_summary(result)
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == "Explore: transferkit serve 'runs/my run/store' --run 'runs/my run'"
