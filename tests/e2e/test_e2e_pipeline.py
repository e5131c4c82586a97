"""End to end on real photos: the pipeline on hymenoptera, and the README tour on the bundled sample."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest

from transferkit.cli import main
from transferkit.cli.pipeline_cmds import sample_data_path

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def test_pipeline_on_hymenoptera(hymenoptera, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["pipeline", str(hymenoptera), "--model", "efficientnet_lite0", "--epochs", "3", "--out", str(out),
                 "--json", "--quiet"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["strategy"] == "feature-extraction"  # 245 images, natural photos
    assert summary["val_accuracy"] >= 0.92
    html = (out / "report.html").read_text(encoding="utf-8")
    for section in ("dataset", "strategy", "training", "metrics", "embedding", "retrieval", "gallery"):
        assert f'id="{section}"' in html
    assert html.count("&#10003;") + html.count("&#10007;") == 2 * 5  # one query per class, top-5 each (✓/✗)
    assert all(s.startswith("data:") for s in re.findall(r'src="([^"]+)"', html))
    # retrieval quality, through the CLI as a user would ask for it
    assert main(["search-eval", str(out / "store"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_queries"] == 398
    assert metrics["p_at_5"] >= 0.85


def _tour_commands() -> list[tuple[list[str], int]]:
    """``$ transferkit ...`` lines of the README tour with the exit code the README shows."""
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    cmds = []
    for i, line in enumerate(lines):
        if line.startswith("$ transferkit "):
            command = line[2:].split("|")[0]
            expected = 0
            for nxt in lines[i + 1:]:
                if nxt.startswith("$ ") or nxt.startswith("```"):
                    break
                m = re.match(r"\(exit (\d+)\)", nxt)
                if m:
                    expected = int(m.group(1))
            cmds.append((shlex.split(command, comments=True)[1:], expected))  # "# ..." is a note for people
    return cmds


def test_readme_tour_commands_work(tmp_path, capsys, monkeypatch):
    commands = _tour_commands()
    assert len(commands) >= 8
    monkeypatch.chdir(tmp_path)
    os.symlink(sample_data_path(), tmp_path / "data")
    for args, expected in commands:
        code = main(args)
        out, err = capsys.readouterr()
        assert code == expected, (args, err[-500:])
        if expected:
            assert err.startswith("Error:") and "Traceback" not in err
    assert (tmp_path / "runs" / "tsne.html").is_file()
