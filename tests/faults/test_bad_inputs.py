"""Bad images and folders through train, embed, predict, search and pipeline.

Readable images (every PIL mode, 1x1, 1x5000, EXIF-rotated, odd names, symlinks) are used;
unreadable ones (empty, truncated, random bytes, text, PDF, decompression bombs, dangling and
looping symlinks) are skipped, named in a warning and counted; hidden files and OS clutter
are ignored; a run that cannot go on stops with one ``Error:`` line and exit code 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from transferkit.errors import DataNotFoundError

from .conftest import add_bad_files, add_clutter, add_odd_but_readable, assert_clean_error

TINY = ("--model", "tiny_cnn")


@pytest.fixture(scope="module")
def messy(tmp_path_factory, synth):
    """train/ + val/ with 3 classes; train/red holds every unreadable kind, train/blue every odd readable kind."""
    root = synth.make_dataset(tmp_path_factory.mktemp("messy") / "data", per_class=6, val_per_class=3)
    bad = add_bad_files(root / "train" / "red")
    odd = add_odd_but_readable(root / "train" / "blue", colour=(30, 40, 210))
    add_clutter(root / "train" / "green")
    (root / "train" / "green" / "deeper" / "deepest").mkdir(parents=True)
    shutil.copy(root / "train" / "green" / "img000.png", root / "train" / "green" / "deeper" / "deepest" / "nested.png")
    return {"root": root, "bad": bad, "odd": odd, "num_train": 3 * 6 + len(odd) + 1, "num_val": 9}


def _names(paths) -> set[str]:
    return {Path(p).name for p in paths}


def test_train_skips_counts_and_names_unreadable_files(messy, cli, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = cli("train", messy["root"], *TINY, "--strategy", "feature-extraction", "--epochs", "1",
                            "--workers", "0", "--out", out, "--json")
    assert code == 0, err
    for name in messy["bad"]:
        assert f"{name}:" in err, f"no warning names {name}"
    assert "Traceback" not in err
    for clutter in (".DS_Store", "Thumbs.db", "desktop.ini", ".hidden.jpg", "._img.jpg", "notes.txt"):
        assert clutter not in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_files"] == len(messy["bad"])
    assert _names(metrics["skipped"]) == messy["bad"]
    # every readable image, odd or not, was used: the split holds them all, plus files that only fail when decoded
    assert metrics["dataset"]["num_train"] - _late_skips(metrics) == messy["num_train"]
    assert metrics["dataset"]["num_val"] == messy["num_val"]
    assert json.loads(stdout)["skipped_files"] == len(messy["bad"])


def _late_skips(metrics) -> int:
    """Files that pass the header check and fail only when decoded (truncated) stay in the split counts."""
    return sum(1 for p in metrics["skipped"] if Path(p).name == "truncated.png")


def test_embed_skips_counts_and_names_unreadable_files(messy, cli, tmp_path):
    store = tmp_path / "store"
    code, stdout, err = cli("embed", messy["root"], *TINY, "--store", store, "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["skipped"] == len(messy["bad"])
    assert _names(report["skipped_files"]) == messy["bad"]
    assert report["added"] == report["num_rows"] == messy["num_train"] + messy["num_val"]
    for name in messy["bad"]:
        assert f"{name}:" in err
    bomb_reason = next(r for p, r in report["skipped_files"].items() if p.endswith("bomb.png"))
    assert "decompression bomb" in bomb_reason and "TRANSFERKIT_MAX_PIXELS" in bomb_reason
    # a second run changes nothing and still reports the same skipped files
    code, stdout, _ = cli("embed", messy["root"], *TINY, "--store", store, "--json")
    again = json.loads(stdout)
    assert code == 0 and again["added"] == 0 and again["unchanged"] == report["num_rows"] and again["skipped"] == len(messy["bad"])


def test_embed_records_exif_oriented_size(messy, cli, tmp_path):
    from transferkit.store.store import EmbeddingStore

    store = tmp_path / "store"
    assert cli("embed", messy["root"] / "train" / "blue", *TINY, "--store", store, "-q")[0] == 0
    rows = {Path(r["path"]).name: r for r in EmbeddingStore.open(store).rows(columns=["path", "width", "height"])}
    assert (rows["exif-rotated.jpg"]["width"], rows["exif-rotated.jpg"]["height"]) == (20, 60)
    assert (rows["one-by-5000.png"]["width"], rows["one-by-5000.png"]["height"]) == (1, 5000)


@pytest.fixture(scope="module")
def tiny_run(messy, tmp_path_factory):
    from transferkit.cli import main

    out = tmp_path_factory.mktemp("tinyrun") / "run"
    assert main(["train", str(messy["root"]), *TINY, "--strategy", "feature-extraction", "--epochs", "1",
                 "--workers", "0", "--out", str(out), "-q"]) == 0
    return out


def test_predict_reports_each_unreadable_file_and_predicts_the_rest(messy, tiny_run, cli):
    red, blue = messy["root"] / "train" / "red", messy["root"] / "train" / "blue"
    code, stdout, err = cli("predict", tiny_run, red, blue, "--json")
    assert code == 0, err
    results = {Path(r["path"]).name: r for r in json.loads(stdout)}
    errors = {n for n, r in results.items() if "error" in r}
    assert errors == messy["bad"]
    for name in messy["odd"]:
        assert len(results[name]["predictions"]) == 3
    assert not (_names(results) & {".DS_Store", "Thumbs.db"})


def test_predict_single_odd_file_names(messy, tiny_run, cli):
    blue = messy["root"] / "train" / "blue"
    code, stdout, err = cli("predict", tiny_run, "--json", "--", blue / "--leading-dashes.png", blue / "ünïcødé-图像.png",
                            blue / "name with spaces.png")
    assert code == 0, err
    assert [Path(r["path"]).name for r in json.loads(stdout)] == ["--leading-dashes.png", "ünïcødé-图像.png", "name with spaces.png"]


@pytest.fixture(scope="module")
def messy_store(messy, tmp_path_factory):
    from transferkit.cli import main

    store = tmp_path_factory.mktemp("messystore") / "store"
    assert main(["embed", str(messy["root"]), *TINY, "--store", str(store), "-q"]) == 0
    return store


def test_search_with_unreadable_query_is_a_clean_error(messy, messy_store, cli):
    red = messy["root"] / "train" / "red"
    for name in sorted(messy["bad"]):
        code, _, err = cli("search", messy_store, red / name)
        if name in ("dangling.png", "loop-a.png", "loop-b.png"):
            assert_clean_error(code, err, "not found", name)
        else:
            assert_clean_error(code, err, "Cannot read query image", name)


def test_search_with_odd_readable_queries(messy, messy_store, cli):
    blue = messy["root"] / "train" / "blue"
    for name in ("mode-CMYK.tif", "mode-I_16.tif", "one-pixel.png", "exif-rotated.jpg", "ünïcødé-图像.png"):
        code, stdout, err = cli("search", messy_store, blue / name, "--json", "-k", "3")
        assert code == 0, err
        assert len(json.loads(stdout)) == 3


def test_pixel_limit_is_configurable(messy, cli, monkeypatch, tmp_path):
    blue = messy["root"] / "train" / "blue"
    monkeypatch.setenv("TRANSFERKIT_MAX_PIXELS", "4000")
    code, stdout, err = cli("embed", blue, *TINY, "--store", tmp_path / "s", "--json")
    assert code == 0, err
    skipped = json.loads(stdout)["skipped_files"]
    assert _names(skipped) == {"one-by-5000.png"}
    assert "limit of 4,000" in next(iter(skipped.values()))
    monkeypatch.setenv("TRANSFERKIT_MAX_PIXELS", "lots")
    code, _, err = cli("embed", blue, *TINY, "--store", tmp_path / "s2")
    assert_clean_error(code, err, "TRANSFERKIT_MAX_PIXELS", "lots")


def test_pipeline_on_messy_data_counts_skips_and_never_writes_to_sources(messy, cli, tmp_path):
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in messy["root"].rglob("*") if p.is_file() and not p.is_symlink()}
    out = tmp_path / "pipe"
    code, stdout, err = cli("pipeline", messy["root"], *TINY, "--strategy", "feature-extraction", "--epochs", "1",
                            "--no-tsne", "--out", out, "--json")
    assert code == 0, err
    info = json.loads((out / "pipeline.json").read_text())
    assert info["embed"]["skipped"] == len(messy["bad"])
    assert json.loads((out / "metrics.json").read_text())["skipped_files"] == len(messy["bad"])
    assert (out / "report.html").stat().st_size > 1000
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in before}
    assert after == before, "a source image was modified"
    new = {p for p in messy["root"].rglob("*") if p.is_file()} - set(before) - {p for p in messy["root"].rglob("*") if p.is_symlink()}
    assert not new, f"files written into the data folder: {new}"


# ---------------------------------------------------------------------- folders
def _folder_case(kind: str, root: Path, synth) -> tuple[Path, tuple[str, ...]]:
    """Build a broken dataset; return (path to pass, words the error must contain)."""
    if kind == "missing":
        return root / "nope", ("not found", "nope")
    if kind == "empty":
        root.mkdir()
        return root, ("No", "images", str(root))
    if kind == "file":
        root.parent.mkdir(parents=True, exist_ok=True)
        root.write_bytes(b"x")
        return root, ("file, not a folder",)
    if kind == "only-bad-files":
        add_bad_files(root / "red")
        (root / "red" / "truncated.png").unlink()  # its header is valid: it would count as one readable image
        return root, ("No readable images", "9 unreadable files skipped")
    if kind == "one-class":
        synth.write_class_images(root / "red", (200, 30, 40), 4, __import__("numpy").random.default_rng(0))
        return root, ("Only one class", "red", "two class folders")
    if kind == "val-class-not-in-train":
        synth.make_dataset(root, classes=("blue", "green"), per_class=3, val_per_class=2)
        synth.write_class_images(root / "val" / "red", (200, 30, 40), 2, __import__("numpy").random.default_rng(0))
        return root, ("validation split has classes not in training", "red")
    if kind == "nested-one-level-too-deep":
        synth.make_dataset(root / "dataset", per_class=3, val_per_class=2)
        return root, ("Only one class", "dataset")
    raise ValueError(kind)


FOLDER_CASES = ["missing", "empty", "file", "only-bad-files", "one-class", "val-class-not-in-train", "nested-one-level-too-deep"]


@pytest.mark.parametrize("kind", FOLDER_CASES)
def test_train_on_broken_folder_is_one_clean_line(kind, cli, tmp_path, synth):
    data, needles = _folder_case(kind, tmp_path / "data", synth)
    code, _, err = cli("train", data, *TINY, "--epochs", "1", "--out", tmp_path / "run")
    assert_clean_error(code, err, *needles)
    assert not (tmp_path / "run").exists(), "a failed start must not leave a half-made run"


@pytest.mark.parametrize("kind", ["missing", "empty", "file", "only-bad-files"])
def test_embed_on_broken_folder(kind, cli, tmp_path, synth):
    data, _ = _folder_case(kind, tmp_path / "data", synth)
    code, stdout, err = cli("embed", data, *TINY, "--store", tmp_path / "store", "--json")
    if kind == "only-bad-files":  # nothing readable is not fatal for embed: an empty store, every file reported
        assert code == 0, err
        report = json.loads(stdout)
        assert report["num_rows"] == 0 and report["skipped"] == 9
    else:
        assert_clean_error(code, err, str(data.name))


def test_predict_and_evaluate_on_broken_paths(tiny_run, cli, tmp_path, synth):
    code, _, err = cli("predict", tiny_run, tmp_path / "missing.jpg")
    assert_clean_error(code, err, "Not found", "missing.jpg")
    (tmp_path / "empty").mkdir()
    code, _, err = cli("predict", tiny_run, tmp_path / "empty")
    assert_clean_error(code, err, "No images found")
    data, needles = _folder_case("val-class-not-in-train", tmp_path / "vdata", synth)
    code, _, err = cli("evaluate", tiny_run, data)
    assert_clean_error(code, err, "red")
    code, _, err = cli("evaluate", tiny_run, _folder_case("empty", tmp_path / "e2", synth)[0])
    assert_clean_error(code, err, "No")


def test_empty_class_folder_and_deep_nesting_are_fine(cli, tmp_path, synth):
    root = synth.make_dataset(tmp_path / "data", classes=("blue", "red"), per_class=3, val_per_class=2)
    (root / "train" / "empty-class").mkdir()
    deep = root / "train" / "red" / "a" / "b" / "c"
    deep.mkdir(parents=True)
    shutil.copy(root / "train" / "red" / "img000.png", deep / "deep.png")
    code, stdout, err = cli("train", root, *TINY, "--strategy", "feature-extraction", "--epochs", "1", "--workers", "0",
                            "--out", tmp_path / "run", "--json")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dataset"]["classes"] == ["blue", "red"]
    assert metrics["dataset"]["num_train"] == 7 and metrics["skipped_files"] == 0


def test_debug_shows_the_traceback(tmp_path):
    from transferkit.cli import main

    with pytest.raises(DataNotFoundError, match="not found"):
        main(["--debug", "train", str(tmp_path / "nope"), *TINY])


@pytest.mark.parametrize("argv", [["train"], ["train", "x", "--bogus"], ["nosuchcmd"], ["embed", "x"], ["search"]])
def test_usage_errors_exit_2_without_traceback(argv, cli):
    code, _, err = cli(*argv)
    assert code == 2, err
    assert "Traceback" not in err and "Usage:" in err
