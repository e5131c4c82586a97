"""CLI: duplicates driven in-process (text, JSON, the HTML page, a bad threshold)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from transferkit.cli import main
from transferkit.curate.duplicates import PIXEL_THRESHOLD


@pytest.fixture(scope="module")
def dup_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dups")
    rng = np.random.default_rng(0)
    folder = tmp / "data" / "train" / "noise"
    folder.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3)).astype("uint8")).save(folder / f"{i}.png")
    shutil.copy(folder / "0.png", folder / "copy_of_0.png")  # same bytes
    store = tmp / "store"
    assert main(["embed", str(tmp / "data"), "--model", "tiny_cnn", "--store", str(store), "--quiet"]) == 0
    return store


def test_duplicates_json_groups_the_exact_copy(dup_store, capsys):
    assert main(["duplicates", str(dup_store), "--threshold", "0.999999", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_images"] == 5 and report["num_groups"] == 1 and report["num_removable"] == 1
    assert report["candidates_by"] == "exact" and report["pixel_threshold"] == PIXEL_THRESHOLD and report["accept_threshold"] == 0.999999
    group = report["groups"][0]
    assert group["kind"] == "exact"
    assert group["paths"][0].endswith("0.png") and group["paths"][1].endswith("copy_of_0.png")  # shorter path kept


def test_duplicates_page_is_self_contained(dup_store, tmp_path, capsys):
    page = tmp_path / "dups.html"
    assert main(["duplicates", str(dup_store), "--threshold", "0.999999", "--out", str(page)]) == 0
    out = capsys.readouterr().out
    assert "1 duplicate groups, 1 removable of 5 images" in out and "remove" in out
    text = page.read_text()
    assert text.count("data:image/jpeg;base64,") == 2 and "http" not in text


def test_duplicates_json_confirms_a_resized_copy_by_pixels(tmp_path, capsys):
    rng = np.random.default_rng(1)
    folder = tmp_path / "data" / "train" / "blobs"
    folder.mkdir(parents=True)
    for i in range(4):  # smooth pictures: tiny_cnn sees them alike, their thumbnails do not correlate
        Image.fromarray(rng.integers(0, 255, (5, 6, 3)).astype("uint8")).resize((60, 50), Image.Resampling.BICUBIC).save(
            folder / f"{i}.png")
    with Image.open(folder / "0.png") as im:
        im.resize((30, 25)).save(folder / "small_0.jpg", quality=30)
    store = tmp_path / "store"
    assert main(["embed", str(tmp_path / "data"), "--model", "tiny_cnn", "--store", str(store), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["duplicates", str(store), "--threshold", "0.5", "--accept-threshold", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [[p.rsplit("/", 1)[-1] for p in g["paths"]] for g in report["groups"]] == [["0.png", "small_0.jpg"]]
    assert report["groups"][0]["kind"] == "near" and report["pixel_read"] >= 2


def test_duplicates_bad_threshold_is_a_one_line_usage_error(dup_store, capsys):
    assert main(["duplicates", str(dup_store), "--threshold", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "threshold" in err and "(0, 1]" in err and "Traceback" not in err
