"""CLI: embed, search, index, search-eval driven in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.cli import main

COLORS = {"red": (200, 30, 30), "blue": (30, 30, 200)}


def _make_data(root: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, col in COLORS.items():
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                a = (np.array(col) + rng.integers(-40, 40, (40, 40, 3))).clip(0, 255).astype("uint8")
                Image.fromarray(a).save(root / split / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    data = _make_data(tmp / "data")
    store = tmp / "store"
    code = main(["embed", str(data), "--model", "tiny_cnn", "--store", str(store), "--quiet", "--batch-size", "4"])
    assert code == 0
    return data, store


def test_embed_prints_counts_and_is_incremental(embedded, capsys):
    data, store = embedded
    assert main(["embed", str(data), "--model", "tiny_cnn", "--store", str(store), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "added 0, updated 0, removed 0, unchanged 16, skipped 0" in out
    assert main(["embed", str(data), "--model", "tiny_cnn", "--store", str(store), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["unchanged"] == 16 and report["num_rows"] == 16


def test_search_by_image_json(embedded, capsys):
    data, store = embedded
    query = data / "val" / "red" / "0.png"
    assert main(["search", str(store), str(query), "--top-k", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert results[0]["path"] == str(query.resolve()) and results[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert all(r["label"] == "red" for r in results)
    assert set(results[0]) == {"rank", "path", "label", "score", "split", "id"}
    assert main(["search", str(store), str(query), "--label", "blue", "--split", "train", "--json"]) == 0
    filtered = json.loads(capsys.readouterr().out)
    assert len(filtered) == 4 and all(r["label"] == "blue" and r["split"] == "train" for r in filtered)


def test_search_by_id_text_output(embedded, capsys):
    data, store = embedded
    assert main(["search", str(store), str(data / "train" / "blue" / "1.png"), "--json", "-k", "1"]) == 0
    rid = json.loads(capsys.readouterr().out)[0]["id"]
    assert main(["search", str(store), "--id", rid, "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split()[0] == "1" and lines[0].endswith("blue")
    assert "train/blue/1.png" not in lines[0]  # the query itself is excluded


def test_index_and_search_eval(embedded, capsys):
    _, store = embedded
    assert main(["index", str(store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_vectors"] == 16 and info["recall_at_10"] == pytest.approx(1.0)
    assert main(["search-eval", str(store), "--k", "1,5", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["num_queries"] == 16 and m["p_at_1"] >= 0.9 and "map_at_5" in m
    assert main(["search-eval", str(store)]) == 0
    assert "k=10" in capsys.readouterr().out


def test_index_prints_its_result_line(embedded, capsys):
    _, store = embedded
    assert main(["index", str(store)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("HNSW index over 16 vectors (efSearch ") and "recall@10 1.000 vs exact (16 queries)" in out
    assert len(out.strip().splitlines()) == 1 and "Warning" not in err


def test_index_kind_ivfpq_on_a_small_store_is_a_one_line_error(embedded, capsys):
    _, store = embedded
    assert main(["index", str(store), "--kind", "ivfpq"]) != 0
    err = capsys.readouterr().err
    assert "needs at least 624 vectors; the store has 16" in err and "Traceback" not in err
    assert main(["index", str(store), "--kind", "bogus"]) != 0
    assert "must be one of auto, hnsw, ivf, ivfpq" in capsys.readouterr().err


def test_damaged_store_exits_1_with_a_neutral_remedy(embedded, capsys, tmp_path):
    import shutil

    _, store = embedded
    damaged = tmp_path / "damaged"
    shutil.copytree(store, damaged)
    (damaged / "transferkit_store.json").write_text("{not json")
    assert main(["search-eval", str(damaged)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: Corrupt store metadata") and "Embed the images into a new store." in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["embed", "DATA", "--store", "S"], "exactly one of RUN .* or --model"),
        (["embed", "RUN", "DATA", "--model", "tiny_cnn", "--store", "S"], "exactly one of RUN"),
        (["embed", "nowhere", "--model", "tiny_cnn", "--store", "S"], "Image folder not found"),
        (["embed", "DATA", "--model", "resnet81", "--store", "S"], "Did you mean 'resnet18'"),
        (["search", "nowhere", "--id", "x"], "Embedding store not found"),
        (["search", "STORE"], "exactly one of QUERY"),
        (["search", "STORE", "--id", "nope"], "No embedding with id 'nope'"),
        (["search", "STORE", "--id", "x", "--top-k", "0"], "--top-k must be a positive integer"),
        (["search-eval", "STORE", "--k", "a,b"], "--k must be comma-separated"),
        (["embed", "DATA", "--model", "tiny_cnn", "--weights", "none", "--store", "STORE"], "holds embeddings from tiny_cnn"),
    ],
)
def test_errors_exit_2_with_message(embedded, capsys, tmp_path, args, message):
    data, store = embedded
    args = [str(data) if a == "DATA" else str(store) if a == "STORE" else str(tmp_path / a) if a in ("nowhere", "RUN", "S") else a
            for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("embed", "search", "index", "search-eval"):
        assert cmd in out
