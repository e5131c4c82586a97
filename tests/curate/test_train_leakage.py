"""train records (and warns about) val images that are byte-for-byte copies of training images."""

from __future__ import annotations

import json
import shutil

from transferkit.training.trainer import train

FAST = {"model": "tiny_cnn", "num_workers": 0, "quiet": True, "batch_size": 8, "epochs": 1}


def test_train_records_exact_leakage(split_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(split_data, data)
    cls = sorted(p for p in (data / "train").iterdir() if p.is_dir())[0]
    src = sorted(cls.iterdir())[0]
    shutil.copy(src, data / "val" / cls.name / "leaked_copy.png")
    events = []
    run = train(data, strategy="feature-extraction", out=tmp_path / "run", progress=events.append, **FAST)
    leakage = json.loads((run.path / "metrics.json").read_text())["leakage"]
    assert leakage["num_exact"] == 1 and leakage["num_leaked"] == 1 and leakage["checked"] == "exact"
    assert leakage["pairs"][0]["train"] == str(src) and leakage["pairs"][0]["eval"].endswith("leaked_copy.png")
    warnings = [e.message for e in events if e.kind == "warning"]
    assert any(w.startswith("1 val images duplicate training images") for w in warnings), warnings


def test_train_without_copies_records_none(split_data, tmp_path):
    run = train(split_data, strategy="feature-extraction", out=tmp_path / "run", **FAST)
    assert json.loads((run.path / "metrics.json").read_text())["leakage"]["num_leaked"] == 0
