"""CLI: label-issues and outliers driven in-process (a planted mislabelled image, JSON, the page, one-line errors)."""

from __future__ import annotations

import json
import shutil

import pytest

from transferkit.cli import main


@pytest.fixture(scope="module")
def noisy_folder(tmp_path_factory, synth):
    """3 colour classes x 10 images; one red image filed under blue/ (the planted label error)."""
    import numpy as np

    root = tmp_path_factory.mktemp("li") / "data"
    rng = np.random.default_rng(0)
    for name, colour in synth.COLOURS.items():
        synth.write_class_images(root / name, colour, 10, rng)
    shutil.move(root / "red" / "img003.jpg", root / "blue" / "misfiled.jpg")
    return root


@pytest.fixture(scope="module")
def noisy_store(noisy_folder, tmp_path_factory):
    store = tmp_path_factory.mktemp("li-store") / "store"
    assert main(["label-issues", str(noisy_folder), "--model", "tiny_cnn", "--store", str(store), "--folds", "3",
                 "--json", "--quiet"]) == 0
    return store


def test_label_issues_of_a_folder_flags_the_misfiled_image(noisy_folder, noisy_store, capsys):
    capsys.readouterr()
    # the store the fixture embedded into is reused: nothing is embedded again
    assert main(["label-issues", str(noisy_folder), "--model", "tiny_cnn", "--store", str(noisy_store), "--folds", "3",
                 "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_images"] == 30 and report["classes"] == ["blue", "green", "red"]
    assert report["embedded"]["added"] == 0 and report["embedded"]["unchanged"] == 30
    first = report["issues"][0]
    assert first["path"].endswith("blue/misfiled.jpg")
    assert (first["rank"], first["given_label"], first["suggested_label"]) == (1, "blue", "red")
    assert first["score"] > 0.5 and first["confident"] and report["cross_validation"]["folds"] == 3


def test_label_issues_of_a_store_prints_the_ranking_and_writes_the_page(noisy_store, tmp_path, capsys):
    page = tmp_path / "issues.html"
    assert main(["label-issues", str(noisy_store), "--folds", "3", "--top", "1", "--out", str(page), "--quiet"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "likely label errors among 30 images (3 classes)" in lines[0]
    assert lines[1].split()[:1] == ["1*"] and "blue -> red" in lines[1] and lines[1].endswith("misfiled.jpg")
    assert f"Page: {page}" in out
    text = page.read_text()
    assert "data:image/jpeg;base64," in text and "misfiled.jpg" in text and "<script" not in text


def test_outliers_json_ranks_every_image_once(noisy_store, capsys):
    assert main(["outliers", str(noisy_store), "--k", "3", "--top", "30", "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_images"] == 30 and report["k"] == 3 and len(report["outliers"]) == 30
    assert len({o["id"] for o in report["outliers"]}) == 30
    scores = [o["score"] for o in report["outliers"]]
    assert scores == sorted(scores, reverse=True)
    misfiled = next(o for o in report["class_outliers"] if o["path"].endswith("misfiled.jpg"))
    assert misfiled["rank"] == 1 and misfiled["nearest_class"] == "red"


def test_a_folder_with_one_class_is_a_one_line_data_error(tmp_path, synth, capsys):
    import numpy as np

    synth.write_class_images(tmp_path / "data" / "only", (200, 10, 10), 6, np.random.default_rng(1))
    assert main(["label-issues", str(tmp_path / "data"), "--model", "tiny_cnn", "--store", str(tmp_path / "s"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "at least two classes; got 1 (only 'only')" in err and "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("command", ["label-issues", "outliers"])
def test_a_missing_path_is_a_one_line_error(tmp_path, command, capsys):
    assert main([command, str(tmp_path / "nope"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_model_with_a_store_is_a_usage_error(noisy_store, capsys):
    assert main(["label-issues", str(noisy_store), "--model", "resnet18", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds embeddings of 'tiny_cnn', not of" in err and "Traceback" not in err


def test_a_folder_without_store_is_embedded_once_into_the_cache(noisy_folder):
    import transferkit as tk

    first = tk.find_label_issues(noisy_folder, model="tiny_cnn", folds=3, quiet=True)
    again = tk.find_label_issues(noisy_folder, model="tiny_cnn", folds=3, quiet=True)
    assert first.embedded["added"] == 30 and again.embedded["added"] == 0 and again.embedded["unchanged"] == 30
    assert "curate-stores" in first.store and first.store == again.store
    assert [i.id for i in first.issues] == [i.id for i in again.issues]  # same vectors, same folds: the same ranking
