"""Untrusted files: malicious pickles, edited or corrupt run directories and stores."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from .conftest import assert_clean_error

TINY = ("--model", "tiny_cnn")


class _Evil:
    """Unpickling this writes a marker file (the attack the loaders must refuse)."""

    marker = ""

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def _evil_file(path: Path, marker: Path, *, via_torch: bool) -> Path:
    import torch

    _Evil.marker = str(marker)
    if via_torch:
        torch.save({"stem.0.weight": _Evil()}, str(path))
    else:
        path.write_bytes(pickle.dumps(_Evil(), protocol=2))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory, synth):
    return synth.make_dataset(tmp_path_factory.mktemp("untrusted") / "data", classes=("blue", "red"), per_class=4,
                              val_per_class=2)


@pytest.fixture(scope="module")
def good_run(data, tmp_path_factory):
    from transferkit.cli import main

    out = tmp_path_factory.mktemp("goodrun") / "run"
    assert main(["train", str(data), *TINY, "--strategy", "feature-extraction", "--epochs", "1", "--workers", "0",
                 "--out", str(out), "-q"]) == 0
    return out


@pytest.mark.parametrize("via_torch", [True, False], ids=["torch.save", "raw-pickle"])
def test_malicious_weights_file_is_refused_without_running_code(via_torch, data, cli, tmp_path):
    marker = tmp_path / "PWNED"
    evil = _evil_file(tmp_path / "evil.pth", marker, via_torch=via_torch)
    for args in (("train", data, *TINY, "--weights", evil, "--out", tmp_path / "run"),
                 ("embed", data, *TINY, "--weights", evil, "--store", tmp_path / "store")):
        code, _, err = cli(*args)
        assert_clean_error(code, err, "Refused to load", "evil.pth", "safetensors")
        assert not marker.exists(), "unpickling ran attacker code"


def test_malicious_checkpoint_is_refused_on_resume(data, good_run, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    marker = tmp_path / "PWNED"
    _evil_file(run / "checkpoint.pt", marker, via_torch=True)
    code, _, err = cli("train", data, *TINY, "--out", run, "--resume")
    assert_clean_error(code, err, "checkpoint.pt")
    assert not marker.exists()


def test_malicious_checkpoint_message_says_it_was_refused_as_unsafe(data, good_run, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    _evil_file(run / "checkpoint.pt", tmp_path / "PWNED", via_torch=True)
    code, _, err = cli("train", data, *TINY, "--out", run, "--resume")
    assert_clean_error(code, err, "Refused to load", "pickled")
    assert "\x1b" not in err and "weights_only" not in err


def _edit_json(name: str, edit):
    def mutate(run: Path) -> None:
        meta = json.loads((run / name).read_text())
        edit(meta)
        (run / name).write_text(json.dumps(meta))

    return mutate


def _truncate(name: str, keep: int):
    def mutate(run: Path) -> None:
        (run / name).write_bytes((run / name).read_bytes()[:keep])

    return mutate


RUN_FAULTS = {
    "model.json-not-json": (lambda r: (r / "model.json").write_text("{not json"), "Corrupt run metadata"),
    "model.json-a-list": (lambda r: (r / "model.json").write_text("[1, 2]"), "expected a JSON object"),
    "model.json-binary": (lambda r: (r / "model.json").write_bytes(b"\xff\xfe\x00garbage"), "Corrupt run metadata"),
    "format-version-from-the-future": (_edit_json("model.json", lambda m: m.update(format_version=99)), "format version 99"),
    "format-version-missing": (_edit_json("model.json", lambda m: m.pop("format_version")), "format version None"),
    "classes-missing": (_edit_json("model.json", lambda m: m.pop("classes")), "missing classes"),
    "backbone-missing": (_edit_json("model.json", lambda m: m.pop("backbone")), "missing backbone"),
    "classes-vs-num_classes": (_edit_json("model.json", lambda m: m.update(classes=["a", "b", "c"])), "does not match"),
    "classes-vs-weights": (_edit_json("model.json", lambda m: m.update(classes=["a", "b", "c"], num_classes=3)),
                           "does not match backbone"),
    "other-backbone": (_edit_json("model.json", lambda m: m.update(backbone="efficientnet_lite0")), "does not match backbone"),
    "unknown-backbone": (_edit_json("model.json", lambda m: m.update(backbone="resnet99")), "resnet99"),
    "preprocessing-garbage": (_edit_json("model.json", lambda m: m.update(preprocessing="x")), "bad preprocessing"),
    "safetensors-garbage": (lambda r: (r / "model.safetensors").write_bytes(b"\x00" * 64), "Corrupt model file"),
    "safetensors-truncated": (_truncate("model.safetensors", 200), "Corrupt model file"),
    "safetensors-empty": (_truncate("model.safetensors", 0), "Corrupt model file"),
    "safetensors-missing": (lambda r: (r / "model.safetensors").unlink(), "model.safetensors is missing"),
    "model.json-missing": (lambda r: (r / "model.json").unlink(), "not a transferkit run"),
}


@pytest.mark.parametrize("fault", sorted(RUN_FAULTS))
def test_damaged_run_is_refused_by_evaluate_predict_and_embed(fault, data, good_run, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    mutate, needle = RUN_FAULTS[fault]
    mutate(run)
    image = data / "val" / "red" / "img000.png"
    # a damaged or incomplete run is a runtime failure (1); a folder that is no run at all, the user's mistake (2)
    exit_code = 2 if fault == "model.json-missing" else 1
    for args in (("evaluate", run, data), ("predict", run, image), ("embed", run, data, "--store", tmp_path / "store")):
        code, _, err = cli(*args)
        assert_clean_error(code, err, needle, exit_code=exit_code)
    assert not (tmp_path / "store" / "transferkit_store.json").exists()


def test_corrupt_metrics_json_does_not_block_prediction(data, good_run, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    (run / "metrics.json").write_text("{")
    code, stdout, err = cli("predict", run, data / "val" / "red" / "img000.png", "--json")
    assert code == 0, err
    assert json.loads(stdout)[0]["predictions"]
    assert "Ignoring corrupt" in err and "metrics.json" in err


# ---------------------------------------------------------------------- stores
@pytest.fixture(scope="module")
def good_store(data, tmp_path_factory):
    from transferkit.cli import main

    store = tmp_path_factory.mktemp("goodstore") / "store"
    assert main(["embed", str(data), *TINY, "--store", str(store), "-q"]) == 0
    return store


def _edit_store_meta(edit):
    def mutate(store: Path) -> None:
        path = store / "transferkit_store.json"
        meta = json.loads(path.read_text())
        edit(meta)
        path.write_text(json.dumps(meta))

    return mutate


def _damage_lance(pattern: str):
    def mutate(store: Path) -> None:
        files = [p for p in (store / "embeddings.lance").rglob(pattern) if p.is_file()]
        assert files, pattern
        for p in files:
            p.write_bytes(b"garbage")

    return mutate


STORE_FAULTS = {
    "meta-not-json": (lambda s: (s / "transferkit_store.json").write_text("{"), "Corrupt store metadata"),
    "meta-missing": (lambda s: (s / "transferkit_store.json").unlink(), "not a transferkit embedding store"),
    "format-version": (_edit_store_meta(lambda m: m.update(format_version=7)), "store format version 7"),
    "dim-edited": (_edit_store_meta(lambda m: m.update(dim=64)), "Corrupt store metadata"),
    "dim-edited-both": (_edit_store_meta(lambda m: (m.update(dim=64), m["model"].update(dim=64))), "64"),
    "dim-not-int": (_edit_store_meta(lambda m: m.update(dim="32")), "Corrupt store metadata"),
    "model-not-dict": (_edit_store_meta(lambda m: m.update(model="tiny_cnn")), "Corrupt store metadata"),
    "source-not-dict": (_edit_store_meta(lambda m: m.update(source="x")), "Corrupt store metadata"),
    "other-model": (_edit_store_meta(lambda m: m["model"].update(backbone="efficientnet_lite0")), "holds embeddings from"),
    "other-weights": (_edit_store_meta(lambda m: m["model"].update(weights="imagenet")), "holds embeddings from"),
    "table-data-damaged": (_damage_lance("*.lance"), "table files are damaged"),
    "table-manifest-damaged": (_damage_lance("*.manifest"), "table files are damaged"),
}


@pytest.mark.parametrize("fault", sorted(STORE_FAULTS))
def test_damaged_or_foreign_store_is_refused(fault, data, good_store, cli, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    mutate, needle = STORE_FAULTS[fault]
    mutate(store)
    # a damaged store is a runtime failure (1); not a store, or another model's, is the caller's mistake (2)
    exit_code = 2 if fault in ("meta-missing", "other-model", "other-weights") else 1
    query = data / "val" / "red" / "img000.png"
    code, _, err = cli("search", store, query)
    assert_clean_error(code, err, needle, exit_code=exit_code)
    code, _, err = cli("embed", data, *TINY, "--store", store)
    if fault == "meta-missing":
        assert_clean_error(code, err, "non-empty folder that is not an embedding store")
    else:
        assert_clean_error(code, err, needle, exit_code=exit_code)
    if fault not in ("other-model", "other-weights"):  # search-eval needs no model: a relabelled model is not its concern
        code, _, err = cli("search-eval", store)
        assert_clean_error(code, err, exit_code=exit_code)


def test_store_paths_are_never_written(data, good_store, cli, tmp_path):
    """Paths read from a store (thumbnails, reports, plots) are read-only inputs, even when edited to point elsewhere."""
    from transferkit.store.store import EmbeddingStore

    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    victim = tmp_path / "victim.png"
    shutil.copy(data / "val" / "red" / "img000.png", victim)
    st = EmbeddingStore.open(store)
    rows = st.rows()
    rows[0]["path"] = str(victim)
    rows[1]["path"] = str(tmp_path / "would-be-created.png")
    st.upsert(rows[:2])
    sources = [p for p in data.rglob("*.png")] + [victim]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sources}
    for args in (("search", store, "--id", rows[0]["id"], "--json"), ("search-eval", store, "--json"), ("index", store)):
        code, _, err = cli(*args)
        assert code == 0, err
    code, _, err = cli("plot", store, "--out", tmp_path / "map.html")  # reads every path for hover thumbnails
    assert code == 0, err
    assert (tmp_path / "map.html").stat().st_size > 1000
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sources} == before
    assert not (tmp_path / "would-be-created.png").exists()
