"""train records (and warns once about) val and test images that are exact or near copies of training images."""

from __future__ import annotations

import json
import shutil

from PIL import Image, ImageEnhance

from transferkit.training.trainer import train

FAST = {"model": "tiny_cnn", "num_workers": 0, "quiet": True, "batch_size": 8, "epochs": 1}


def test_train_records_exact_and_near_leakage_in_val_and_test(split_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(split_data, data)
    shutil.copytree(data / "val", data / "test")
    classes = sorted(p for p in (data / "train").iterdir() if p.is_dir())
    src, other = sorted(classes[0].iterdir())[0], sorted(classes[1].iterdir())[1]
    shutil.copy(src, data / "val" / classes[0].name / "leaked_copy.png")  # same bytes
    with Image.open(other) as im:  # near copies: brighter, and mirrored
        ImageEnhance.Brightness(im.convert("RGB")).enhance(1.05).save(data / "val" / classes[1].name / "brighter.png")
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(data / "test" / classes[1].name / "mirrored.png")
    events = []
    run = train(data, strategy="feature-extraction", out=tmp_path / "run", progress=events.append, **FAST)
    leakage = json.loads((run.path / "metrics.json").read_text())["leakage"]
    assert leakage["checked"] == "exact+near"
    assert (leakage["num_exact"], leakage["num_near"], leakage["num_leaked"]) == (1, 2, 3), leakage
    assert (leakage["val"]["num_exact"], leakage["val"]["num_near"], leakage["test"]["num_near"]) == (1, 1, 1)
    exact = [p for p in leakage["val"]["pairs"] if p["kind"] == "exact"][0]
    assert exact["train"] == str(src) and exact["eval"].endswith("leaked_copy.png")
    assert leakage["test"]["pairs"][0]["train"] == str(other) and leakage["test"]["pairs"][0]["eval"].endswith("mirrored.png")
    warnings = [e.message for e in events if e.kind == "warning" and "duplicate training images" in e.message]
    assert len(warnings) == 1 and warnings[0].startswith("2 val and 1 test images duplicate training images"), warnings


def test_train_without_copies_records_none(split_data, tmp_path):
    leakage = json.loads((train(split_data, strategy="feature-extraction", out=tmp_path / "run", **FAST).path
                          / "metrics.json").read_text())["leakage"]
    assert leakage["num_leaked"] == 0 and leakage["checked"] == "exact+near"


def test_fine_tuning_checks_exact_copies_and_pipeline_adds_near_ones(split_data, tmp_path):
    import transferkit as tk
    from transferkit.events import Reporter
    from transferkit.training.leakage_check import pipeline_leakage

    data = tmp_path / "data"
    shutil.copytree(split_data, data)
    cls = sorted(p for p in (data / "train").iterdir() if p.is_dir())[0]
    src = sorted(cls.iterdir())[0]
    with Image.open(src) as im:  # the same pixels in other bytes: fine-tuned features of these noise images all look alike,
        im.convert("RGB").save(data / "val" / cls.name / "reencoded.bmp")  # so the copy must be the closest to be checked
    assert (data / "val" / cls.name / "reencoded.bmp").read_bytes() != src.read_bytes()
    run = train(data, strategy="full", out=tmp_path / "run", **FAST)
    leakage = json.loads((run.path / "metrics.json").read_text())["leakage"]
    assert leakage["checked"] == "exact" and leakage["num_leaked"] == 0 and "pipeline" in leakage["note"]
    tk.embed_folder(tk.Extractor.from_run(run.path), data, tmp_path / "store", quiet=True)
    events = []
    record = pipeline_leakage(run.path / "metrics.json", tk.EmbeddingStore.open(tmp_path / "store"), Reporter(events.append))
    assert record["checked"] == "exact+near" and record["val"]["num_near"] == 1
    assert record["val"]["pairs"][0]["train"] == str(src)
    assert json.loads((run.path / "metrics.json").read_text())["leakage"] == record
    assert [e.message[:51] for e in events if e.kind == "warning"] == ["1 val images duplicate training images (0 exact, 1 "]
