"""Searches while ``embed_folder`` adds to the same store never see a half-written store."""

from __future__ import annotations

import shutil
import threading

import transferkit as tk


def test_searches_during_embedding_see_complete_commits(tmp_path, helpers):
    data = tmp_path / "data"
    shutil.copytree(helpers.SAMPLE / "train", data / "train")
    store_path = tmp_path / "store"
    tk.embed_folder(helpers.tiny_extractor(), data, store_path, quiet=True)
    first_ids = [str(i) for i in tk.EmbeddingStore.open(store_path).snapshot()["id"].tolist()]
    assert len(first_ids) == 80
    shutil.copytree(helpers.SAMPLE / "val", data / "val")  # 80 more, embedded while the server answers

    app_client = helpers.make_client(store_path)
    app = app_client.app
    errors: list[str] = []
    counts: list[int] = []
    done = threading.Event()

    def embed():
        try:
            tk.embed_folder(helpers.tiny_extractor(), data, store_path, quiet=True, batch_size=4, chunk_size=8)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"embed: {exc!r}")
        finally:
            done.set()

    def search(worker: int):
        from fastapi.testclient import TestClient

        with TestClient(app, base_url="http://127.0.0.1") as c:
            n = 0
            while not done.is_set() or n < 5:
                qid = first_ids[(worker * 7 + n) % len(first_ids)]
                r = c.get(f"/api/search?id={qid}&k=10")
                pts = c.get("/api/points?fields=ids").json()
                n += 1
                if r.status_code != 200:
                    errors.append(f"search {r.status_code}: {r.text}")
                    continue
                results = r.json()
                if [x["rank"] for x in results] != list(range(1, 11)) or results[0]["id"] != qid:
                    errors.append(f"bad ranks {results}")
                if pts["count"] != len(pts["ids"]) or pts["total"] != pts["count"] or len(set(pts["ids"])) != pts["count"]:
                    errors.append(f"inconsistent points {pts['count']} {len(pts['ids'])}")
                if not set(first_ids) <= set(pts["ids"]):
                    errors.append("rows of the first commit missing")
                unknown = {x["id"] for x in results} - set(pts["ids"]) - set(first_ids)
                store_now = tk.EmbeddingStore.open(store_path)
                if unknown and any(store_now.get(i) is None for i in unknown):
                    errors.append(f"results with ids not in the store: {unknown}")
                counts.append(pts["count"])

    writer = threading.Thread(target=embed)
    readers = [threading.Thread(target=search, args=(w,)) for w in range(3)]
    for t in readers + [writer]:
        t.start()
    for t in readers + [writer]:
        t.join(timeout=120)
    assert not errors, errors[:5]
    assert counts and min(counts) >= 80 and max(counts) == 160
    assert all(c % 8 == 0 for c in counts)  # whole commits of 8 only, never part of one
    with app_client as c:
        assert c.get("/api/info").json()["count"] == 160
