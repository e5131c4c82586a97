"""EmbeddingStore: create/open checks, upsert/delete, search (exact and HNSW index), the query function."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from transferkit.errors import ConfigError, CorruptStoreError, ModelMismatchError, StoreError
from transferkit.store.evaluate import search_eval
from transferkit.store.index import build_index, load_index
from transferkit.store.store import META_NAME, EmbeddingStore

DIM = 8
MODEL = {"backbone": "tiny_cnn", "weights": "synthetic-seed0", "weights_digest": None,
         "preprocessing": {"input_size": 32, "resize_size": 36, "interpolation": "bilinear",
                           "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, "dim": DIM}


def _rows(n, seed=0, label=lambda i: "ab"[i % 2], split="train"):
    rng = np.random.default_rng(seed)
    return [{"id": f"id{i}", "path": f"/x/{i}.png", "relpath": f"{i}.png", "label": label(i), "split": split,
             "width": 4, "height": 3, "fingerprint": f"fp{i}", "size": 10, "mtime": 5,
             "vector": rng.normal(size=DIM).astype(np.float32)} for i in range(n)]


@pytest.fixture
def store(tmp_path):
    return EmbeddingStore.create(tmp_path / "s", model_id=MODEL, source={"backbone": "tiny_cnn", "weights": "default"})


def test_upsert_get_delete_roundtrip(store):
    rows = _rows(6)
    assert store.upsert(rows) == 6
    assert len(store) == 6
    got = store.get("id3")
    assert got["path"] == "/x/3.png" and got["label"] == "b" and got["width"] == 4
    np.testing.assert_allclose(got["vector"], rows[3]["vector"] / np.linalg.norm(rows[3]["vector"]), rtol=1e-5)
    # upsert replaces by id, never duplicates
    rows[3]["label"] = "z"
    store.upsert(rows[2:4])
    assert len(store) == 6 and store.get("id3")["label"] == "z"
    store.delete(["id0", "id1", "missing"])
    assert len(store) == 4 and store.get("id0") is None
    ids, vecs = store.vectors(label="a")
    assert sorted(ids) == ["id2", "id4"] and vecs.shape == (2, DIM)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert {r["id"] for r in store.rows(split="train", columns=["id"])} == {"id2", "id3", "id4", "id5"}


def test_reopen_and_model_mismatch_refused(store, tmp_path):
    store.upsert(_rows(3))
    again = EmbeddingStore.open(tmp_path / "s", model_id=MODEL)
    assert len(again) == 3 and again.dim == DIM
    other = dict(MODEL, backbone="efficientnet_lite0", dim=1280)
    with pytest.raises(ModelMismatchError, match=r"holds embeddings from tiny_cnn.*Embed into a new store"):
        EmbeddingStore.open(tmp_path / "s", model_id=other)
    other_pre = dict(MODEL, preprocessing=dict(MODEL["preprocessing"], input_size=28))
    with pytest.raises(ModelMismatchError, match="28px"):
        EmbeddingStore.open_or_create(tmp_path / "s", model_id=other_pre)


def test_open_refuses_bad_folders(tmp_path):
    with pytest.raises(StoreError, match="Embedding store not found: .*nope. Embed images into it first") as exc:
        EmbeddingStore.open(tmp_path / "nope")
    assert exc.value.exit_code == 2 and "--" not in str(exc.value)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "file.txt").write_text("x")
    with pytest.raises(StoreError, match="is not a transferkit embedding store") as exc:
        EmbeddingStore.open(tmp_path / "plain")
    assert exc.value.exit_code == 2
    with pytest.raises(StoreError, match="The store path .*plain is a non-empty folder that is not an embedding store") as exc:
        EmbeddingStore.create(tmp_path / "plain", model_id=MODEL)
    assert exc.value.exit_code == 2 and "--" not in str(exc.value)
    with pytest.raises(StoreError, match="The store path .*file.txt is a file") as exc:
        EmbeddingStore.create(tmp_path / "plain" / "file.txt", model_id=MODEL)
    assert exc.value.exit_code == 2 and "--" not in str(exc.value)


def test_open_refuses_corrupt_or_other_version(store, tmp_path):
    meta_path = tmp_path / "s" / META_NAME
    good = json.loads(meta_path.read_text())
    meta_path.write_text("{not json")
    with pytest.raises(CorruptStoreError, match="Corrupt store metadata.*Embed the images into a new store") as exc:
        EmbeddingStore.open(tmp_path / "s")
    assert exc.value.exit_code == 1 and "--" not in str(exc.value)
    meta_path.write_text(json.dumps(dict(good, format_version=99)))
    with pytest.raises(CorruptStoreError, match="store format version 99"):
        EmbeddingStore.open(tmp_path / "s")
    meta_path.write_text(json.dumps({k: v for k, v in good.items() if k != "model"}))
    with pytest.raises(CorruptStoreError, match="missing 'model' or 'dim'"):
        EmbeddingStore.open(tmp_path / "s")


def test_damaged_table_is_a_corrupt_store(store, tmp_path):
    store.upsert(_rows(3))
    for p in (tmp_path / "s" / "embeddings.lance").rglob("*.manifest"):
        p.write_bytes(b"garbage")
    with pytest.raises(CorruptStoreError, match="table files are damaged.*Embed the images into a new store") as exc:
        len(EmbeddingStore.open(tmp_path / "s"))
    assert exc.value.exit_code == 1


def test_upsert_wrong_dimension_refused(store):
    rows = _rows(1)
    rows[0]["vector"] = np.ones(DIM + 1, dtype=np.float32)
    with pytest.raises(StoreError, match="do not fit store"):
        store.upsert(rows)


def test_search_exact_and_filters(store):
    rows = _rows(40, seed=1)
    store.upsert(rows)
    x = np.stack([r["vector"] / np.linalg.norm(r["vector"]) for r in rows])
    q = np.random.default_rng(9).normal(size=DIM).astype(np.float32)
    res = store.search(q, 5, exact=True)
    ref = np.argsort(-(x @ (q / np.linalg.norm(q))))[:5]
    assert [r["id"] for r in res] == [f"id{i}" for i in ref]
    assert [r["rank"] for r in res] == [1, 2, 3, 4, 5]
    res_b = store.search(q, 50, label="b")
    assert len(res_b) == 20 and all(r["label"] == "b" for r in res_b)
    assert store.search(q, 3, split="val") == []
    res_ex = store.search(x[0], 3, exclude_ids=["id0"])
    assert "id0" not in [r["id"] for r in res_ex] and len(res_ex) == 3


def test_index_used_and_goes_stale(store, caplog):
    rng = np.random.default_rng(2)
    centers = rng.normal(size=(5, DIM))
    rows = _rows(300, seed=2)
    for i, r in enumerate(rows):
        r["vector"] = (centers[i % 5] + 0.3 * rng.normal(size=DIM)).astype(np.float32)
    store.upsert(rows)
    assert store.search(rows[7]["vector"], 1)[0]["id"] == "id7"  # exact, before any index
    info = build_index(store, num_queries=100)
    assert info["num_vectors"] == 300 and info["recall_at_10"] >= 0.95
    assert load_index(store) is not None
    loaded = store.ann_index()
    assert loaded is not None and loaded.info["num_vectors"] == 300
    assert store.ann_index() is loaded  # loaded once per store version
    q = rows[7]["vector"]
    ann = store.search(q, 10)
    exact = store.search(q, 10, exact=True)
    assert len({r["id"] for r in ann} & {r["id"] for r in exact}) >= 9
    assert ann[0]["id"] == "id7" and ann[0]["score"] == pytest.approx(1.0, abs=1e-5)
    store.delete(["id0"])
    with caplog.at_level(logging.WARNING, logger="transferkit"):
        assert load_index(store) is None
        assert store.ann_index() is None  # the store's loaded index went stale with the write
    assert "out of date" in caplog.text and "Hint: rebuild the index" in caplog.text
    build_index(store, num_queries=50, quiet=True)
    assert store.ann_index() is not None and store.ann_index().info["num_vectors"] == 299


def test_a_rebuilt_index_replaces_the_loaded_one(store):
    store.upsert(_rows(60))
    first = build_index(store, kind="hnsw", m=8, num_queries=20, quiet=True)
    assert store.ann_index().info["m"] == 8
    build_index(store, kind="hnsw", m=16, num_queries=20, quiet=True)  # same store version, new index
    assert first["store_version"] == store.version and store.ann_index().info["m"] == 16


def test_build_index_reports_the_result_through_events(store):
    store.upsert(_rows(50))
    events = []
    info = build_index(store, num_queries=20, progress=events.append)
    assert [(e.kind, e.task) for e in events] == [("start", "index"), ("end", "index"), ("message", "")]
    assert events[-1].message.startswith("HNSW index over 50 vectors (efSearch ")
    assert f"recall@10 {info['recall_at_10']:.3f}" in events[-1].message
    assert events[-1].data["num_vectors"] == 50


def test_build_index_warns_through_events_when_the_target_recall_is_out_of_reach(store, monkeypatch):
    from transferkit.store import index as index_mod

    store.upsert(_rows(30))
    real = index_mod._recall
    monkeypatch.setattr(index_mod, "_recall", lambda found, truth: 0.5 * real(found, truth))  # never reaches 0.95
    events = []
    info = build_index(store, num_queries=10, progress=events.append)
    warnings = [e.message for e in events if e.kind == "warning"]
    assert info["ef_search"] == 512 and len(warnings) == 1
    assert "below the target 0.95, at its largest ef_search (512)" in warnings[0]


def test_search_eval_on_store(store):
    rows = _rows(20, label=lambda i: "ab"[i % 2])
    for i, r in enumerate(rows):
        r["vector"] = np.eye(DIM, dtype=np.float32)[i % 2] + 0.01 * i
    store.upsert(rows)
    m = search_eval(store, (1, 5))
    assert m["p_at_1"] == 1.0 and m["p_at_5"] == 1.0 and m["num_queries"] == 20


def test_search_eval_needs_labels(store):
    store.upsert(_rows(5, label=lambda i: ""))
    with pytest.raises(StoreError, match="fewer than two labelled embeddings; retrieval evaluation needs") as exc:
        search_eval(store)
    assert exc.value.exit_code == 2


def test_build_index_on_an_empty_store_is_refused(store):
    with pytest.raises(StoreError, match="is empty; embed images into it first") as exc:
        build_index(store)
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_index_kinds_reach_the_target_recall_on_clustered_vectors(tmp_path, kind):
    dim, n = 32, 3000
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(30, dim))
    vecs = (centres[rng.integers(0, 30, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)
    model = dict(MODEL, dim=dim)
    st = EmbeddingStore.create(tmp_path / kind, model_id=model)
    st.upsert([{"id": f"id{i}", "path": f"/x/{i}.png", "relpath": f"{i}.png", "label": "a", "split": "train",
                "width": 1, "height": 1, "fingerprint": "", "size": 0, "mtime": 0, "vector": v} for i, v in enumerate(vecs)])
    info = build_index(st, kind=kind, target_recall=0.95, num_queries=100)
    assert info["recall_at_10"] >= 0.95
    assert info["kind"] == {"hnsw": "faiss-hnsw-ip", "ivf": "faiss-ivf-flat-ip"}[kind]
    tuned = info["nprobe"] if kind == "ivf" else info["ef_search"]
    assert tuned >= 1
    # the saved index is used by search and agrees with exact search on the top hit
    q = vecs[7]
    approx = st.search(q, top_k=1)
    exact = st.search(q, top_k=1, exact=True)
    assert approx[0]["id"] == exact[0]["id"] == "id7"


def test_index_rejects_bad_kind(store):
    store.upsert(_rows(4))
    with pytest.raises(Exception, match="`kind` of the index must be one of"):
        build_index(store, kind="lsh")


def test_the_library_leaves_sys_modules_alone_and_the_cli_defers_the_rest_client(tmp_path):
    """The REST client's API modules (0.5 s of ``transferkit search --id``) load in the CLI only when something reads
    the package; the library imports LanceDB plainly."""
    import subprocess
    import sys

    use_store = (
        "import sys, numpy as np\n"
        "from transferkit.store.store import EmbeddingStore\n"
        f"s = EmbeddingStore.open_or_create({str(tmp_path / 's')!r}, model_id={{'backbone': 'x', 'dim': 4}}, source={{}})\n"
        "s.upsert([{'id': 'a', 'path': 'a.jpg', 'relpath': 'a.jpg', 'label': 'l', 'split': 'all', 'width': 1,\n"
        "           'height': 1, 'fingerprint': 'f', 'size': 1, 'mtime': 1, 'vector': np.ones(4, np.float32)}])\n"
        "print('ROWS', len(s), 'lancedb' in sys.modules, 'lance_namespace_urllib3_client.api.table_api' in sys.modules)\n"
    )
    cli = (
        "from transferkit.cli._common import defer_lancedb_rest_client\n"
        "defer_lancedb_rest_client()\n" + use_store +
        "import lance_namespace_urllib3_client as client\n"
        "print('LATER', client.TableApi.__name__, client.ApiClient.__name__, 'lance_namespace_urllib3_client.api.table_api' in sys.modules)\n"
        "try:\n    client.no_such_name\nexcept AttributeError as e:\n    print('MISSING', type(e).__name__)\n"
    )
    outputs = []
    for code in (use_store, cli):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout.split())
    library, deferred = outputs
    assert library[library.index("ROWS") + 1:library.index("ROWS") + 4] == ["1", "True", "True"]
    assert deferred[deferred.index("ROWS") + 1:deferred.index("ROWS") + 4] == ["1", "True", "False"]
    assert deferred[deferred.index("LATER") + 1:deferred.index("LATER") + 4] == ["TableApi", "ApiClient", "True"]
    assert "MISSING" in deferred


# ---------------------------------------------------------------------- the query function
def test_search_store_by_vector_and_by_id(store, tmp_path):
    from transferkit import search_store

    rows = _rows(12, seed=3)
    store.upsert(rows)
    q = rows[4]["vector"]
    by_vector = search_store(store, vector=q, top_k=3)
    assert by_vector == store.search(q, 3) and by_vector[0]["id"] == "id4"
    assert set(by_vector[0]) == {"rank", "score", "id", "path", "relpath", "label", "split"}
    by_id = search_store(tmp_path / "s", id="id4", top_k=3, label="a")  # a folder path opens the store
    assert [r["id"] for r in by_id] == [r["id"] for r in store.search(q, 3, label="a", exclude_ids=["id4"])]
    assert "id4" not in [r["id"] for r in by_id] and len(by_id) == 3 and all(r["label"] == "a" for r in by_id)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({}, ConfigError, "Pass exactly one query: `vector`, `id` or `image`; got none"),
    ({"id": "id0", "vector": np.ones(DIM)}, ConfigError, "got vector, id"),
    ({"id": "nope"}, ConfigError, "No embedding with id 'nope'"),
    ({"id": "id0", "top_k": 0}, ConfigError, "`top_k` must be a positive integer; got 0"),
    ({"vector": np.ones(DIM + 1)}, ConfigError, "dimension 8"),
])
def test_search_store_refuses_bad_queries(store, kwargs, error, match):
    from transferkit import search_store

    store.upsert(_rows(3))
    with pytest.raises(error, match=match) as exc:
        search_store(store, **kwargs)
    assert exc.value.exit_code == 2


def test_search_store_by_image_needs_a_rebuildable_model(tmp_path):
    from transferkit import search_store

    st = EmbeddingStore.create(tmp_path / "vectors-only", model_id=MODEL)  # filled from vectors: no `source`
    st.upsert(_rows(3))
    with pytest.raises(StoreError, match="records no model that can be rebuilt.*by `vector` or `id`") as exc:
        search_store(st, image=tmp_path / "q.png")
    assert exc.value.exit_code == 2


@pytest.fixture(scope="module")
def image_store(tmp_path_factory):
    from PIL import Image

    import transferkit as tk

    root = tmp_path_factory.mktemp("imgstore")
    rng = np.random.default_rng(0)
    for c, col in {"red": (200, 30, 30), "blue": (30, 30, 200)}.items():
        (root / "data" / c).mkdir(parents=True)
        for i in range(3):
            a = (np.array(col) + rng.integers(-40, 40, (40, 40, 3))).clip(0, 255).astype("uint8")
            Image.fromarray(a).save(root / "data" / c / f"{i}.png")
    extractor = tk.Extractor.from_backbone("tiny_cnn", precision="fp32", backend="torch")
    tk.embed_folder(extractor, root / "data", root / "store", quiet=True)
    return root, tk.EmbeddingStore.open(root / "store"), extractor


def test_search_store_by_image_path_or_pil_image_finds_the_stored_image(image_store):
    from PIL import Image

    from transferkit import search_store

    root, st, extractor = image_store
    query = root / "data" / "blue" / "1.png"
    rebuilt = search_store(st, image=query, top_k=2)  # the store's own model, rebuilt from its metadata
    assert rebuilt[0]["path"] == str(query.resolve()) and rebuilt[0]["score"] > 0.999
    given = search_store(st, image=str(query), top_k=2, extractor=extractor)
    assert given[0]["path"] == str(query.resolve()) and given[0]["score"] == pytest.approx(1.0, abs=1e-5)
    with Image.open(query) as im:
        pil = search_store(st, image=im.copy(), top_k=1, extractor=extractor)
    assert pil[0]["path"] == str(query.resolve()) and pil[0]["score"] > 0.99


def test_search_store_by_image_errors(image_store, tmp_path):
    import transferkit as tk
    from transferkit.errors import DataError, DataNotFoundError

    _, st, _ = image_store
    with pytest.raises(DataNotFoundError, match="Query image not found: .*missing.png"):
        tk.search_store(st, image=tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="Cannot read query image .*broken.png"):
        tk.search_store(st, image=tmp_path / "broken.png")
    with pytest.raises(ConfigError, match="`image` must be an image file path or a PIL image; got int"):
        tk.search_store(st, image=3)
    other = tk.Extractor.from_backbone("tiny_cnn", weights="none", precision="fp32", backend="torch")
    with pytest.raises(ModelMismatchError, match="holds embeddings from tiny_cnn"):
        tk.search_store(st, image=tmp_path / "missing.png", extractor=other)
