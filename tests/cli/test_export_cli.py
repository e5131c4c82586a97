"""CLI: export, then embed and search with the exported file, driven in-process."""

from __future__ import annotations

import json

import pytest

import transferkit as tk
from transferkit.cli import main


def test_export_then_embed_and_search(split_data, tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    assert main(["export", "tiny_cnn", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"Wrote {out}" in captured.err and f"{out}: " in captured.out and "onnx embedder of tiny_cnn" in captured.out
    assert "input images [batch, 3, height, width], output features [batch, 32]" in captured.out
    assert "min cosine 1.000000 (>= 0.9999 required)" in captured.out or "min cosine 0.9999" in captured.out
    assert "parity openvino     batch 8  32px: max |diff|" in captured.err  # the check, line by line, on stderr
    assert "Warning: torch.onnx export: DeprecationWarning" in captured.err  # the exporter's own warnings are shown

    store = tmp_path / "store"
    assert main(["embed", str(split_data), "--model", f"onnx:{out}", "--store", str(store), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "added 48, updated 0, removed 0, unchanged 0, skipped 0" and lines[1].endswith("openvino fp32)")
    query = split_data / "val" / "red" / "img000.png"
    assert main(["search", str(store), str(query), "--top-k", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results[0]["path"] == str(query.resolve()) and [r["label"] for r in results] == ["red", "red"]


def test_export_json_openvino(tmp_path, capsys):
    out = tmp_path / "tiny.xml"
    assert main(["export", "tiny_cnn", "--out", str(out), "--format", "openvino", "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert captured.err == ""
    assert result["files"] == [str(out), str(out.with_suffix(".bin"))] and result["bytes"] > 10_000
    assert result["metadata"]["what"] == "embedder" and result["metadata"]["preprocessing"]["input_size"] == 32
    assert [p["batch"] for p in result["parity"]] == [1, 3, 8] and result["min_cosine"] >= 0.9999
    assert tk.read_export_metadata(out).parity == result["parity"]


@pytest.mark.parametrize(("args", "message"), [
    (["export", "tiny_cnn", "--out", "m.onnx", "--format", "tflite"], "Error: Unknown export format 'tflite'."),
    (["export", "tiny_cnn", "--out", "m.onnx", "--what", "classifier"],
     "Error: tiny_cnn is a backbone without a classifier head, so there is no classifier to export. Export its embedder "
     "(--what embedder), or export a trained run."),
    (["export", "tiny_cnn", "--out", "m.xml"], "Error: --out of a onnx export must end in .onnx; got m.xml."),
    (["embed", "data", "--model", "onnx:missing.onnx", "--store", "s"], "Error: Exported model not found: "),
])
def test_export_errors_exit_2_without_traceback(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "a").mkdir(parents=True)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
