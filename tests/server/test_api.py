"""Every endpoint of the web app, and every bad input the issue lists, with the values they answer."""

from __future__ import annotations

import io
import json
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

import transferkit as tk


def test_info_describes_the_store(client, tiny_store):
    info = client.get("/api/info").json()
    assert info["count"] == 160 and info["dim"] == 32
    assert info["labels"] == {"ants": 80, "bees": 80}
    assert info["model"].startswith("tiny_cnn (weights synthetic-seed0")
    assert info["projections"][:2] == ["pca", "tsne"]
    assert info["index"] is None and info["run"] is None
    assert (info["max_k"], info["max_upload_bytes"], info["max_points"]) == (100, 20_000_000, 1_000_000)
    assert info["notices"] == []


def test_points_json_covers_every_image(client, all_ids):
    body = client.get("/api/points").json()
    assert body["method"] == "pca" and body["total"] == body["count"] == 160 and body["sampled"] is False
    assert sorted(body["ids"]) == sorted(all_ids)
    assert body["labels"] == ["ants", "bees"]
    x, y = np.asarray(body["x"]), np.asarray(body["y"])
    assert x.shape == y.shape == (160,)
    assert max(np.abs(x).max(), np.abs(y).max()) == pytest.approx(1.0, abs=1e-6)  # scaled into [-1, 1], aspect kept
    assert np.abs(x).max() <= 1.0 + 1e-6 and np.abs(y).max() <= 1.0 + 1e-6
    store = tk.EmbeddingStore.open(client.app.state.tk.path)
    label_of = {r["id"]: r["label"] for r in store.rows(columns=["id", "label"])}
    assert [body["labels"][i] for i in body["label"]] == [label_of[i] for i in body["ids"]]
    assert body["predicted"] is None and body["correct"] is None


def test_points_binary_decodes_to_the_json_numbers(client):
    for method, limit in (("pca", 1_000_000), ("pca", 30), ("tsne", 50)):
        js = client.get(f"/api/points?method={method}&limit={limit}").json()
        r = client.get(f"/api/points?method={method}&limit={limit}&format=f32")
        assert r.headers["content-type"] == "application/octet-stream"
        arr = np.frombuffer(r.content, dtype="<f4").reshape(-1, 3)
        assert int(r.headers["X-Count"]) == js["count"] == arr.shape[0]
        assert int(r.headers["X-Total"]) == js["total"] == 160
        assert r.headers["X-Sampled"] == ("1" if js["sampled"] else "0")
        assert json.loads(unquote(r.headers["X-Labels"])) == js["labels"]
        np.testing.assert_array_equal(arr[:, 0], np.asarray(js["x"], dtype=np.float32))
        np.testing.assert_array_equal(arr[:, 1], np.asarray(js["y"], dtype=np.float32))
        np.testing.assert_array_equal(arr[:, 2], np.asarray(js["label"], dtype=np.float32))


def test_points_fields_ids_only(client):
    body = client.get("/api/points?fields=ids&limit=20").json()
    assert set(body) == {"method", "total", "count", "sampled", "labels", "notices", "ids"}
    assert len(body["ids"]) == body["count"] == 20


def test_sampling_above_the_limit_is_stratified_and_says_so(client):
    body = client.get("/api/points?limit=11").json()
    assert body["sampled"] is True and body["count"] == 11 and body["total"] == 160
    counts = np.bincount(body["label"], minlength=2)
    assert sorted(counts.tolist()) == [5, 6]  # 80/80 split keeps its share
    assert any("stratified by label" in n and "11" in n for n in body["notices"])
    assert client.get("/api/points?limit=11").json()["ids"] == body["ids"]  # the same sample every time


def test_stratified_sample_keeps_rare_labels():
    labels = ["a"] * 990 + ["b"] * 10
    picked = tk.sample_stratified(labels, 100)
    chosen = [labels[i] for i in picked]
    assert len(picked) == 100 and chosen.count("b") == 1 and chosen.count("a") == 99
    assert list(picked) == sorted(picked)


def test_projection_is_cached_in_the_store_per_version(store_copy, helpers):
    with helpers.make_client(store_copy) as c:
        first = c.get("/api/points?method=tsne").json()
        cache = store_copy / "projections" / "tsne.npz"
        assert cache.is_file()
        stamp = cache.stat().st_mtime_ns
        assert c.get("/api/points?method=tsne").json()["x"] == first["x"]
        assert cache.stat().st_mtime_ns == stamp  # served from the cache
        store = tk.EmbeddingStore.open(store_copy)
        store.delete([first["ids"][0]])
        after = c.get("/api/points?method=tsne").json()
        assert after["total"] == 159 and first["ids"][0] not in after["ids"]
        with np.load(cache) as z:
            assert int(z["version"]) == store.version


def test_search_by_id_puts_the_query_first(client, all_ids):
    qid = all_ids[3]
    r = client.get(f"/api/search?id={qid}&k=5")
    assert r.headers["X-Search"] == "exact"
    results = r.json()
    assert [x["rank"] for x in results] == [1, 2, 3, 4, 5]
    assert results[0]["id"] == qid and results[0]["score"] == 1.0
    assert len({x["id"] for x in results}) == 5
    scores = [x["score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    store = tk.EmbeddingStore.open(client.app.state.tk.path)
    expected = tk.search_store(store, id=qid, top_k=4, exact=True)
    assert [x["id"] for x in results[1:]] == [x["id"] for x in expected]
    assert {"rank", "id", "path", "label", "score"} <= set(results[0])


def test_search_label_filter(client, all_ids):
    store = tk.EmbeddingStore.open(client.app.state.tk.path)
    ant = next(r["id"] for r in store.rows(columns=["id", "label"]) if r["label"] == "ants")
    bees = client.get(f"/api/search?id={ant}&k=7&label=bees").json()
    assert len(bees) == 7 and {x["label"] for x in bees} == {"bees"} and ant not in {x["id"] for x in bees}
    ants = client.get(f"/api/search?id={ant}&k=7&label=ants").json()
    assert ants[0]["id"] == ant and {x["label"] for x in ants} == {"ants"}


def test_search_uses_the_index_when_built_and_exact_on_request(store_copy, helpers):
    tk.build_index(tk.EmbeddingStore.open(store_copy), quiet=True)
    with helpers.make_client(store_copy) as c:
        qid = c.get("/api/points?fields=ids").json()["ids"][0]
        info = c.get("/api/info").json()["index"]
        assert info["kind"].startswith("faiss") and 0.0 < info["recall_at_10"] <= 1.0
        assert c.get(f"/api/search?id={qid}&k=5").headers["X-Search"] == "ann"
        assert c.get(f"/api/search?id={qid}&k=5&exact=1").headers["X-Search"] == "exact"
        assert c.get(f"/api/search?id={qid}&k=5&label=ants").headers["X-Search"] == "exact"


def test_search_by_upload_finds_the_image_itself(client, all_ids):
    item = client.get(f"/api/items/{all_ids[10]}").json()
    with open(item["path"], "rb") as f:
        data = f.read()
    r = client.post("/api/search", files={"file": ("q.jpg", data, "image/jpeg")}, data={"k": "4"})
    assert r.status_code == 200, r.text
    results = r.json()
    assert len(results) == 4 and results[0]["id"] == all_ids[10] and results[0]["score"] > 0.999
    assert r.headers["X-Search"] == "exact"
    only = client.post("/api/search", files={"file": ("q.jpg", data, "image/jpeg")}, data={"k": "3", "label": "bees"}).json()
    assert {x["label"] for x in only} == {"bees"}


def test_item_details_and_neighbours(client, all_ids):
    body = client.get(f"/api/items/{all_ids[0]}").json()
    store = tk.EmbeddingStore.open(client.app.state.tk.path)
    row = store.get(all_ids[0])
    assert (body["id"], body["path"], body["relpath"], body["label"], body["split"]) == (
        row["id"], row["path"], row["relpath"], row["label"], row["split"])
    assert (body["width"], body["height"]) == (row["width"], row["height"]) and body["width"] > 0
    assert body["predicted"] is None
    assert len(body["neighbours"]) == 8 and body["neighbours"][0]["id"] == all_ids[0]


def test_items_batch_gives_paths_and_labels_in_order(client, all_ids):
    ids = list(reversed(all_ids))
    body = client.post("/api/items", json={"ids": ids}).json()
    by_id = {r["id"]: r for r in tk.EmbeddingStore.open(client.app.state.tk.path).rows()}
    assert [r["id"] for r in body] == ids
    for r in body:
        row = by_id[r["id"]]
        assert (r["path"], r["relpath"], r["label"], r["split"]) == (row["path"], row["relpath"], row["label"], row["split"])
    assert client.post("/api/items", json={"ids": []}).json() == []


@pytest.mark.parametrize("payload,status,words", [
    ({"ids": ["nope", "x"]}, 404, "2 of the 2 ids are not in the store (first: 'nope')"),
    ({"ids": "abc"}, 422, "`ids`"),
    ({}, 422, "`ids`"),
])
def test_items_batch_errors(client, all_ids, payload, status, words):
    if "ids" in payload and isinstance(payload["ids"], list):
        payload = {"ids": [*payload["ids"], all_ids[0]]}
        words = words.replace("of the 2", "of the 3")
    r = client.post("/api/items", json=payload)
    assert r.status_code == status and words in r.json()["error"], r.json()


def test_thumbnail_is_a_small_jpeg_cached(client, all_ids, tiny_store):
    r = client.get(f"/api/items/{all_ids[0]}/thumbnail")
    assert r.headers["content-type"] == "image/jpeg" and "max-age" in r.headers["cache-control"]
    im = Image.open(io.BytesIO(r.content))
    assert im.format == "JPEG" and max(im.size) <= 256
    row = tk.EmbeddingStore.open(tiny_store).get(all_ids[0])
    with Image.open(row["path"]) as orig:
        assert max(im.size) == min(256, max(orig.size))
    assert len(list((tiny_store / "thumbnails").glob("*.jpg"))) >= 1
    assert client.get(f"/api/items/{all_ids[0]}/thumbnail").content == r.content


def test_with_a_run_points_and_items_carry_predictions(tiny_store, tiny_run, helpers):
    with helpers.make_client(tiny_store, run=tiny_run) as c:
        info = c.get("/api/info").json()
        assert info["run"]["classes"] == ["ants", "bees"]
        body = c.get("/api/points").json()
        run = tk.load_run(tiny_run)
        store = tk.EmbeddingStore.open(tiny_store)
        path_of = {r["id"]: r["path"] for r in store.rows(columns=["id", "path"])}
        some = body["ids"][:5]
        expected = run.predict([path_of[i] for i in some], top_k=1, num_workers=0)
        assert [body["labels"][p] for p in body["predicted"][:5]] == [e["predictions"][0]["label"] for e in expected]
        assert body["correct"] == [body["labels"][p] == body["labels"][t] for p, t in zip(body["predicted"], body["label"])]
        item = c.get(f"/api/items/{some[0]}").json()
        assert item["predicted"]["label"] == expected[0]["predictions"][0]["label"]
        assert item["predicted"]["confidence"] == pytest.approx(expected[0]["predictions"][0]["probability"], abs=1e-5)
        assert len(list((tiny_store / "predictions").glob("*.json"))) == 1


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("url, status, words", [
    ("/api/search?id=no-such-id", 404, "No image with id 'no-such-id'"),
    ("/api/items/no-such-id", 404, "No image with id 'no-such-id'"),
    ("/api/items/no-such-id/thumbnail", 404, "No image with id"),
    ("/api/search?id={id}&k=0", 422, "`k`"),
    ("/api/search?id={id}&k=101", 422, "`k`"),
    ("/api/search?id={id}&k=ten", 422, "`k`"),
    ("/api/search?k=5", 422, "`id`"),
    ("/api/search?id={id}&label=wasps", 400, "Unknown label 'wasps'"),
    ("/api/search?id={id}&label=bess", 400, "Did you mean 'bees'"),
    ("/api/points?method=mds", 400, "Unknown projection method 'mds'"),
    ("/api/points?method=umap", 400, "umap-learn"),
    ("/api/points?limit=0", 422, "`limit`"),
    ("/api/points?limit=1000001", 422, "`limit`"),
    ("/api/points?format=csv", 422, "`format`"),
])
def test_bad_queries_answer_4xx_json(client, all_ids, url, status, words):
    if "umap" in url:
        try:
            tk.check_projection_method("umap")
            pytest.skip("umap-learn is installed here")
        except tk.MissingDependencyError:
            pass
    r = client.get(url.format(id=all_ids[0]))
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert words in r.json()["error"]


def _post(client, data: bytes, **fields):
    return client.post("/api/search", files={"file": ("q.jpg", data, "image/jpeg")}, data=fields)


def test_upload_errors(client, helpers):
    good = helpers.jpeg_bytes()
    r = _post(client, b"this is not an image at all")
    assert r.status_code == 400 and "not an image" in r.json()["error"]
    r = _post(client, good, k="0")
    assert r.status_code == 422 and "`k` must be an integer from 1 to 100; got '0'" in r.json()["error"]
    r = _post(client, good, k="500")
    assert r.status_code == 422 and "got '500'" in r.json()["error"]
    r = _post(client, good, label="wasps")
    assert r.status_code == 400 and "Unknown label 'wasps'" in r.json()["error"]
    r = client.post("/api/search", data={"k": "3"})
    assert r.status_code == 400 and "`file`" in r.json()["error"]
    r = client.post("/api/search", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]
    r = _post(client, b"")
    assert r.status_code == 400 and "empty" in r.json()["error"]


def test_upload_over_the_size_limit_is_refused_while_reading(client):
    big = b"\xff\xd8" + b"\0" * 20_000_001
    r = _post(client, big)
    assert r.status_code == 413 and "20,000,000 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is counted as the body arrives
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.jpg\"\r\n\r\n"
        for _ in range(25):
            yield b"\0" * 1_000_000
    r = client.post("/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413


def test_upload_over_the_pixel_limit(tiny_store, helpers):
    with helpers.make_client(tiny_store, settings=tk.Settings(max_pixels=1000)) as c:
        r = _post(c, helpers.jpeg_bytes(size=(100, 100)))
        assert r.status_code == 400
        assert "pixel limit" in r.json()["error"] and "100x100" in r.json()["error"]


def test_unknown_route_and_method(client):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and "/api/nothing" in r.json()["error"]
    r = client.delete("/api/info")
    assert r.status_code == 405 and "DELETE" in r.json()["error"]


def test_a_bug_is_a_500_without_traceback(tiny_store, helpers, monkeypatch):
    with helpers.make_client(tiny_store, raise_server_exceptions=False) as c:
        def boom(*a, **k):
            raise ZeroDivisionError("secret internals")
        monkeypatch.setattr(tk, "project_store", boom)
        r = c.get("/api/points")
        assert r.status_code == 500
        assert r.json() == {"error": "Internal error (ZeroDivisionError) on /api/points; the server log has the details."}
        assert "Traceback" not in r.text and "secret" not in r.text


def test_openapi_documents_the_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/info", "/api/points", "/api/search", "/api/items/{item_id}", "/api/items/{item_id}/thumbnail"} <= set(paths)
    assert "multipart/form-data" in paths["/api/search"]["post"]["requestBody"]["content"]


def test_docs_page_loads_nothing_from_elsewhere(client):
    html = client.get("/docs").text
    assert "SwaggerUIBundle" in html and "/openapi.json" in html
    assert "http://" not in html and "https://" not in html.replace("https://swagger.io", "")  # no CDN, no remote favicon
    for asset, min_bytes in (("/static/docs/swagger-ui-bundle.js", 1_000_000), ("/static/docs/swagger-ui.css", 100_000)):
        assert asset in html
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > min_bytes
