"""EmbeddingStore: create/open checks, upsert/delete, search (exact and HNSW index)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from transferkit.errors import ModelMismatchError, StoreError
from transferkit.store.search import build_index, load_index, search_eval
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
    with pytest.raises(ModelMismatchError, match=r"holds embeddings from tiny_cnn.*Use a new --store folder"):
        EmbeddingStore.open(tmp_path / "s", model_id=other)
    other_pre = dict(MODEL, preprocessing=dict(MODEL["preprocessing"], input_size=28))
    with pytest.raises(ModelMismatchError, match="28px"):
        EmbeddingStore.open_or_create(tmp_path / "s", model_id=other_pre)


def test_open_refuses_bad_folders(tmp_path):
    with pytest.raises(StoreError, match="Embedding store not found"):
        EmbeddingStore.open(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "file.txt").write_text("x")
    with pytest.raises(StoreError, match="is not a transferkit embedding store"):
        EmbeddingStore.open(tmp_path / "plain")
    with pytest.raises(StoreError, match="non-empty folder that is not an embedding store"):
        EmbeddingStore.create(tmp_path / "plain", model_id=MODEL)


def test_open_refuses_corrupt_or_other_version(store, tmp_path):
    meta_path = tmp_path / "s" / META_NAME
    good = json.loads(meta_path.read_text())
    meta_path.write_text("{not json")
    with pytest.raises(StoreError, match="Corrupt store metadata"):
        EmbeddingStore.open(tmp_path / "s")
    meta_path.write_text(json.dumps(dict(good, format_version=99)))
    with pytest.raises(StoreError, match="store format version 99"):
        EmbeddingStore.open(tmp_path / "s")
    meta_path.write_text(json.dumps({k: v for k, v in good.items() if k != "model"}))
    with pytest.raises(StoreError, match="missing 'model' or 'dim'"):
        EmbeddingStore.open(tmp_path / "s")


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
    assert store._ann_cache is None
    q = rows[7]["vector"]
    ann = store.search(q, 10)
    assert store._ann_cache[1] is not None  # the HNSW index answered
    exact = store.search(q, 10, exact=True)
    assert len({r["id"] for r in ann} & {r["id"] for r in exact}) >= 9
    assert ann[0]["id"] == "id7" and ann[0]["score"] == pytest.approx(1.0, abs=1e-5)
    store.delete(["id0"])
    with caplog.at_level(logging.WARNING, logger="transferkit"):
        assert load_index(store) is None
    assert "out of date" in caplog.text


def test_search_eval_on_store(store):
    rows = _rows(20, label=lambda i: "ab"[i % 2])
    for i, r in enumerate(rows):
        r["vector"] = np.eye(DIM, dtype=np.float32)[i % 2] + 0.01 * i
    store.upsert(rows)
    m = search_eval(store, (1, 5))
    assert m["p_at_1"] == 1.0 and m["p_at_5"] == 1.0 and m["num_queries"] == 20


def test_search_eval_needs_labels(store):
    store.upsert(_rows(5, label=lambda i: ""))
    with pytest.raises(StoreError, match="fewer than two labelled embeddings"):
        search_eval(store)


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


def test_lancedb_import_defers_the_rest_clients_api_modules_until_used(tmp_path):
    """The REST client's nine API modules (0.9 s of ``import lancedb``) load only when something reads the package."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from transferkit.store.store import EmbeddingStore\n"
        f"s = EmbeddingStore.open_or_create({str(tmp_path / 's')!r}, model_id={{'backbone': 'x', 'dim': 4}}, source={{}})\n"
        "s.upsert([{'id': 'a', 'path': 'a.jpg', 'relpath': 'a.jpg', 'label': 'l', 'split': 'all', 'width': 1,\n"
        "           'height': 1, 'fingerprint': 'f', 'size': 1, 'mtime': 1, 'vector': np.ones(4, np.float32)}])\n"
        "print('ROWS', len(s), 'lancedb' in sys.modules, 'lance_namespace_urllib3_client.api.table_api' in sys.modules)\n"
        "import lance_namespace_urllib3_client as client\n"
        "print('LATER', client.TableApi.__name__, client.ApiClient.__name__, 'lance_namespace_urllib3_client.api.table_api' in sys.modules)\n"
        "try:\n    client.no_such_name\nexcept AttributeError as e:\n    print('MISSING', type(e).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.split()
    assert out[out.index("ROWS") + 1:out.index("ROWS") + 4] == ["1", "True", "False"]
    assert out[out.index("LATER") + 1:out.index("LATER") + 4] == ["TableApi", "ApiClient", "True"]
    assert "MISSING" in out
