"""A store addressed by URI (object storage in production; ``file://`` here): the table and the metadata follow
the URI, the derived files (index) go to a local cache folder, and every step opens it by the URI again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import transferkit as tk
from transferkit.errors import StoreError
from transferkit.store.location import StoreLocation, is_uri
from transferkit.store.store import META_NAME

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "transferkit" / "sample_data" / "hymenoptera_mini"


def test_uris_and_paths_are_told_apart(tmp_path):
    assert is_uri("s3://bucket/store") and is_uri("gs://b/s") and is_uri("file:///tmp/s")
    assert not is_uri("/tmp/s") and not is_uri("store") and not is_uri(tmp_path) and not is_uri("C:/x")
    local = StoreLocation(tmp_path / "s")
    assert local.local == tmp_path / "s" and local.uri == str(tmp_path / "s") and not local.remote
    remote = StoreLocation(f"file://{tmp_path}/s/", cache_dir=tmp_path / "cache")
    assert remote.remote and remote.uri == f"file://{tmp_path}/s" and remote.local.parent == tmp_path / "cache" / "remote-stores"
    assert remote.local != StoreLocation(f"file://{tmp_path}/t", cache_dir=tmp_path / "cache").local


def test_a_store_at_a_uri_embeds_reopens_indexes_and_searches(tmp_path):
    uri = f"file://{tmp_path}/remote-store"
    report = tk.embed_folder(tk.Extractor.from_backbone("tiny_cnn"), SAMPLE, uri, quiet=True)
    assert report.added == 160 and report.store == uri
    # the metadata and the table are at the URI's folder, nothing derived is
    folder = tmp_path / "remote-store"
    assert json.loads((folder / META_NAME).read_text())["dim"] > 0 and (folder / "embeddings.lance").is_dir()
    store = tk.EmbeddingStore.open(uri)
    assert store.uri == uri and len(store) == 160 and store.path != folder
    again = tk.embed_folder(tk.Extractor.from_backbone("tiny_cnn"), SAMPLE, uri, quiet=True)
    assert (again.added, again.unchanged) == (0, 160)  # incremental through the URI too
    tk.build_index(store, quiet=True)
    assert (store.path / "ann.json").exists() and not (folder / "ann.json").exists()
    row = store.snapshot()
    q = row["vectors"][7]
    found = tk.EmbeddingStore.open(uri).search(q, top_k=3)
    assert found[0]["id"] == row["id"][7] and found[0]["score"] == pytest.approx(1.0, abs=1e-5)
    store.update_meta(note="kept")
    assert json.loads((folder / META_NAME).read_text())["note"] == "kept"


def test_uri_store_errors_name_the_uri(tmp_path):
    uri = f"file://{tmp_path}/nothing-here"
    with pytest.raises(StoreError, match="not found: " + uri):
        tk.EmbeddingStore.open(uri)
    (tmp_path / "not-a-store").mkdir()
    (tmp_path / "not-a-store" / "x.txt").write_text("x")
    with pytest.raises(StoreError, match="non-empty folder"):
        tk.EmbeddingStore.create(f"file://{tmp_path}/not-a-store", model_id={"backbone": "b", "dim": 4})
    with pytest.raises(StoreError, match="is not a transferkit embedding store"):
        tk.EmbeddingStore.open(f"file://{tmp_path}/not-a-store")


def test_the_cli_takes_a_store_uri(tmp_path, capsys):
    from transferkit.cli import main

    uri = f"file://{tmp_path}/cli-store"
    assert main(["embed", str(SAMPLE), "--model", "tiny_cnn", "--store", uri, "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 160
    assert main(["index", uri]) == 0
    capsys.readouterr()
    assert main(["search-eval", uri, "--json"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["p_at_1"] <= 1.0
    some_id = tk.EmbeddingStore.open(uri).snapshot()["id"][0]
    assert main(["search", uri, "--id", some_id, "--top-k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
