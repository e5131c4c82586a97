"""The web app's security: the token, the Host check, files only by store id inside the data root, no listing, no CORS."""

from __future__ import annotations

import os
import shutil

import pytest

import transferkit as tk
from transferkit.server.security import is_local_host

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def locked(tiny_store, helpers):
    with helpers.make_client(tiny_store, token=TOKEN) as c:
        yield c


@pytest.mark.parametrize("url", ["/", "/api/info", "/api/points", "/api/search?id=x", "/static/app.js", "/docs", "/openapi.json"])
def test_every_request_needs_the_token(locked, url):
    r = locked.get(url)
    assert r.status_code == 401 and "access token" in r.json()["error"]
    r = locked.get(url, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"].startswith("Wrong access token")
    sep = "&" if "?" in url else "?"
    assert locked.get(f"{url}{sep}token=wrong").status_code == 401


def test_the_token_by_header_query_or_cookie(locked, tiny_store):
    assert locked.get("/api/info", headers={"Authorization": f"Bearer {TOKEN}"}).json()["count"] == 160
    r = locked.get(f"/api/info?token={TOKEN}")
    assert r.json()["count"] == 160
    assert "transferkit_token" in r.headers["set-cookie"] and "samesite=strict" in r.headers["set-cookie"].lower()
    assert "httponly" in r.headers["set-cookie"].lower()
    # the page's own <img> requests carry the cookie the page URL set
    ids = locked.get("/api/points?fields=ids", cookies={"transferkit_token": TOKEN}).json()["ids"]
    assert len(ids) == 160
    locked.cookies.clear()


def test_a_local_server_refuses_foreign_host_headers(tiny_store, helpers):
    with helpers.make_client(tiny_store, base_url="http://evil.example") as c:
        r = c.get("/api/info")
        assert r.status_code == 400 and "'evil.example' is not allowed" in r.json()["error"]
    with helpers.make_client(tiny_store, base_url="http://localhost:8765") as c:
        assert c.get("/api/info").json()["count"] == 160


def test_local_hosts():
    assert is_local_host("127.0.0.1") and is_local_host("localhost") and is_local_host("::1")
    assert not is_local_host("0.0.0.0") and not is_local_host("192.168.1.5")


def test_serve_binds_localhost_and_a_public_host_gets_a_token(tiny_store, monkeypatch):
    import uvicorn

    from transferkit.server import serve

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    lines: list[str] = []
    serve(tiny_store, echo=lines.append)
    assert calls[-1][1]["host"] == "127.0.0.1" and calls[-1][1]["port"] == 8765
    assert lines[-1].startswith("Open http://127.0.0.1:8765/ ") and "token" not in lines[-1]
    lines.clear()
    serve(tiny_store, host="0.0.0.0", port=9000, echo=lines.append)
    app, kw = calls[-1]
    assert kw["host"] == "0.0.0.0"
    url = next(line for line in lines if line.startswith("Open "))
    token = url.split("?token=")[1].split()[0]
    assert len(token) >= 24 and any("generated an access token" in line for line in lines)
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://192.168.1.5:9000") as c:
        assert c.get("/api/info").status_code == 401
        assert c.get("/api/info", headers={"Authorization": f"Bearer {token}"}).json()["count"] == 160


@pytest.mark.parametrize("url", [
    "/static/../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/..%5c..%5cetc%5cpasswd", "/api/items/../../etc/passwd",
    "/api/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd/thumbnail", "/api/items/..%2f..%2fetc%2fpasswd",
    "/api/items/%2fetc%2fpasswd/thumbnail",
])
def test_no_path_from_the_request_reaches_the_disk(client, url):
    r = client.get(url)
    assert r.status_code in (404, 400)
    assert "root:" not in r.text and r.headers["content-type"].startswith("application/json")


def test_no_directory_listing(client):
    for url in ("/static/", "/static", "/static/.", "/api/items/", "/thumbnails/"):
        r = client.get(url)
        # /api/items answers POST (ids -> paths) only: GET there is 405, never a listing
        assert r.status_code in ((404, 405) if url == "/api/items/" else (404,)), (url, r.status_code)
        assert "index.html" not in r.text and "<a href" not in r.text and r.headers["content-type"] == "application/json"


def test_static_serves_only_shipped_files(helpers, tmp_path, tiny_store, monkeypatch):
    from transferkit.server import static_files

    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "index.html").write_text("<html>page</html>")
    (folder / "app.js").write_text("console.log(1)")
    (folder / ".hidden").write_text("no")
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    os.symlink(secret, folder / "link.txt")
    monkeypatch.setattr(static_files, "STATIC_DIR", folder)
    monkeypatch.setattr(static_files.make_router, "__defaults__", (folder,))
    with helpers.make_client(tiny_store) as c:
        assert c.get("/").text == "<html>page</html>"
        r = c.get("/static/app.js")
        assert r.text == "console.log(1)" and r.headers["content-type"].startswith("text/javascript")
        for name in ("link.txt", ".hidden", "../secret.txt", "%2e%2e/secret.txt"):
            r = c.get(f"/static/{name}")
            assert r.status_code == 404 and "root:" not in r.text


def _add_row(store_path, row_id: str, path: str):
    store = tk.EmbeddingStore.open(store_path)
    base = store.rows()[0]
    store.upsert([{**base, "id": row_id, "path": path, "relpath": os.path.basename(path)}])


def test_a_symlink_escaping_the_data_root_is_not_served(store_copy, helpers, tmp_path):
    store = tk.EmbeddingStore.open(store_copy)
    root = store.meta["data_root"]
    outside = tmp_path / "outside"
    outside.mkdir()
    photo = store.rows()[0]["path"]
    shutil.copy(photo, outside / "private.jpg")
    link = os.path.join(root, "train", "ants", "zz_link_out.jpg")
    os.symlink(outside / "private.jpg", link)
    try:
        _add_row(store_copy, "escape-link", link)
        _add_row(store_copy, "escape-dots", os.path.join(root, os.path.relpath(outside / "private.jpg", root)))
        _add_row(store_copy, "escape-abs", str(outside / "private.jpg"))
        with helpers.make_client(store_copy) as c:
            for rid in ("escape-link", "escape-dots", "escape-abs"):
                r = c.get(f"/api/items/{rid}/thumbnail")
                assert r.status_code == 403 and "outside the store's data root" in r.json()["error"]
                assert not r.content.startswith(b"\xff\xd8")
            assert c.get(f"/api/items/{store.rows()[0]['id']}/thumbnail").headers["content-type"] == "image/jpeg"
    finally:
        os.unlink(link)


def test_a_store_without_data_root_serves_no_files(store_copy, helpers):
    store = tk.EmbeddingStore.open(store_copy)
    meta = dict(store.meta)
    meta.pop("data_root")
    store.meta.clear()
    store.update_meta(**meta)
    with helpers.make_client(store_copy) as c:
        r = c.get(f"/api/items/{store.rows()[0]['id']}/thumbnail")
        assert r.status_code == 403 and "no data root" in r.json()["error"]


def test_cors_is_closed(client):
    r = client.get("/api/info", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = client.options("/api/search", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
