"""The page in a real browser: the map draws every point, hover, click-to-search, upload, label filter, lasso export."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from webapp_support import DOCS_IMG, SAMPLE, edge_store, running_server

import transferkit as tk

pytestmark = pytest.mark.browser

STATE = "window.transferkit.state"


def state(page) -> dict:
    return page.evaluate(STATE)


def point_on_page(page, index: int) -> tuple[float, float]:
    """Where point ``index`` is drawn, in page coordinates."""
    box = page.locator("#map").bounding_box()
    x, y = page.evaluate(f"window.transferkit.scatterplot.getScreenPosition({index})")
    return box["x"] + x, box["y"] + y


def isolated_point(page) -> int:
    """A point with no other point within 12 px, so a click or hover lands on it and nothing else."""
    xy = np.array(page.evaluate("Array.from({length: window.transferkit.state.pointsDrawn}, "
                                "(_, i) => window.transferkit.scatterplot.getScreenPosition(i))"))
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy)) * 1e9
    return int(np.argmax(dist.min(axis=1)))


def map_colours(page) -> set[tuple[int, int, int]]:
    from PIL import Image

    img = Image.open(io.BytesIO(page.locator("#map").screenshot())).convert("RGB")
    pixels = np.asarray(img).reshape(-1, 3)
    return {tuple(int(v) for v in p) for p in pixels if int(p.max()) - int(p.min()) > 60}  # saturated: points, not background


def test_map_draws_every_point(open_page, base_url):
    page = open_page(base_url + "/")
    s = state(page)
    assert s["error"] is None
    assert (s["info"]["count"], s["total"], s["pointsDrawn"], s["method"]) == (160, 160, 160, "pca")
    assert page.evaluate("window.transferkit.scatterplot.get('points').length") == 160
    assert page.locator("#legend").inner_text().split() == ["ants", "(80)", "bees", "(80)"]
    colours = map_colours(page)
    blue, orange = (78, 121, 167), (242, 142, 43)  # the palette's first two: ants, bees
    assert any(np.abs(np.subtract(c, blue)).max() < 12 for c in colours), "no ant-coloured pixel on the map"
    assert any(np.abs(np.subtract(c, orange)).max() < 12 for c in colours), "no bee-coloured pixel on the map"
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    if os.environ.get("TRANSFERKIT_SCREENSHOTS"):  # the README's pictures: refreshed on demand, not by every run
        page.screenshot(path=str(DOCS_IMG / "web-map.png"))

    page.select_option("#method", "tsne")
    page.wait_for_function(f"{STATE}.method === 'tsne'", timeout=60_000)
    assert state(page)["pointsDrawn"] == 160


def test_hover_shows_thumbnail_and_label(open_page, base_url):
    page = open_page(base_url + "/")
    index = isolated_point(page)
    page.mouse.move(*point_on_page(page, index))
    page.wait_for_function(f"{STATE}.hovered && {STATE}.hovered.loaded", timeout=20_000)
    hovered = state(page)["hovered"]
    ids = httpx.get(base_url + "/api/points?fields=ids").json()["ids"]
    assert hovered["id"] == ids[index] and hovered["label"] in ("ants", "bees")
    tooltip = page.locator("#tooltip")
    assert tooltip.is_visible() and tooltip.inner_text() == hovered["label"]
    assert page.evaluate("document.querySelector('#tooltip img').naturalWidth") > 0


def test_click_point_fills_neighbour_grid(open_page, base_url):
    page = open_page(base_url + "/")
    page.fill("#k", "7")
    index = isolated_point(page)
    page.mouse.click(*point_on_page(page, index))
    page.wait_for_function(f"{STATE}.results.length === 7 && {STATE}.item", timeout=20_000)
    s = state(page)
    ids = httpx.get(base_url + "/api/points?fields=ids").json()["ids"]
    assert s["query"] == {"id": ids[index]}
    assert s["results"][0]["id"] == ids[index] and s["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [r["rank"] for r in s["results"]] == list(range(1, 8))
    assert page.locator("#results .card").count() == 7
    assert page.locator("#results .card").first.get_attribute("data-id") == ids[index]
    assert s["answeredBy"] == "exact" and "exact search" in page.locator("#search-status").inner_text()
    assert Path(s["item"]["path"]).name in page.locator("#item").inner_text()
    # the neighbours are highlighted (selected) on the map
    selected = page.evaluate("window.transferkit.scatterplot.get('selectedPoints')")
    assert sorted(ids[i] for i in selected) == sorted(r["id"] for r in s["results"])
    page.wait_for_function("Array.from(document.querySelectorAll('#results img')).every(i => i.complete && i.naturalWidth > 0)")
    if os.environ.get("TRANSFERKIT_SCREENSHOTS"):
        page.screenshot(path=str(DOCS_IMG / "web-search.png"))

    # clicking a thumbnail searches from that image
    second = s["results"][1]["id"]
    page.locator("#results .card").nth(1).click()
    page.wait_for_function(f"{STATE}.query.id === {json.dumps(second)} && {STATE}.results[0].id === {json.dumps(second)}")


def test_upload_an_image(open_page, base_url):
    page = open_page(base_url + "/")
    query = sorted((SAMPLE / "val" / "bees").glob("*.jpg"))[0]
    page.set_input_files("#file", str(query))
    page.wait_for_function(f"{STATE}.results.length === 10", timeout=30_000)
    s = state(page)
    assert s["query"] == {"upload": query.name}
    assert Path(s["results"][0]["path"]).name == query.name and s["results"][0]["score"] > 0.99
    assert page.locator("#results .card").count() == 10

    # dropped on the search panel
    dropped = sorted((SAMPLE / "val" / "ants").glob("*.jpg"))[0]
    page.evaluate("""([b64, name]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, { type: 'image/jpeg' }));
        document.querySelector('#search-panel').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }""", [base64.b64encode(dropped.read_bytes()).decode(), dropped.name])
    page.wait_for_function(f"{STATE}.query.upload === {json.dumps(dropped.name)}", timeout=30_000)
    assert Path(state(page)["results"][0]["path"]).name == dropped.name


def test_a_bad_upload_says_why(open_page, base_url, tmp_path):
    page = open_page(base_url + "/")
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("document.querySelector('#search-status').classList.contains('error')", timeout=30_000)
    assert "image" in page.locator("#search-status").inner_text().lower()
    assert state(page)["results"] == []


def test_filter_by_label(open_page, base_url):
    page = open_page(base_url + "/")
    page.select_option("#label-filter", "bees")
    page.fill("#k", "12")
    page.set_input_files("#file", str(sorted((SAMPLE / "train" / "ants").glob("*.jpg"))[0]))
    page.wait_for_function(f"{STATE}.results.length === 12", timeout=30_000)
    assert {r["label"] for r in state(page)["results"]} == {"bees"}
    assert "label bees" in page.locator("#search-status").inner_text()


def test_lasso_selection_exports_csv_and_json(open_page, base_url, sample_store):
    page = open_page(base_url + "/")
    points = httpx.get(base_url + "/api/points").json()
    expected = {i for i, x in zip(points["ids"], points["x"]) if x < 0}
    assert 0 < len(expected) < 160
    page.evaluate("window.transferkit.scatterplot.lassoSelect([[-1.5, -1.5], [0, -1.5], [0, 1.5], [-1.5, 1.5]], {isGl: true})")
    page.wait_for_function(f"{STATE}.selection.length === {len(expected)}")
    assert set(state(page)["selection"]) == expected
    assert page.locator("#selection-count").inner_text().startswith(f"{len(expected)} selected")

    by_id = {r["id"]: r for r in tk.EmbeddingStore.open(sample_store).rows()}
    with page.expect_download() as got:
        page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(Path(got.value.path()).read_text())))
    assert got.value.suggested_filename == "selection.csv"
    assert {r["id"] for r in rows} == expected
    for r in rows:
        assert Path(r["path"]).is_file() and r["label"] == by_id[r["id"]]["label"]

    with page.expect_download() as got:
        page.click("#export-json")
    data = json.loads(Path(got.value.path()).read_text())
    assert {r["id"] for r in data} == expected and all(Path(r["path"]).is_file() for r in data)


def test_mouse_lasso_selects_points(open_page, base_url):
    page = open_page(base_url + "/")
    box = page.locator("#map").bounding_box()
    page.check("#lasso")
    corners = [(0.02, 0.02), (0.5, 0.02), (0.5, 0.98), (0.02, 0.98), (0.02, 0.03)]
    page.mouse.move(box["x"] + corners[0][0] * box["width"], box["y"] + corners[0][1] * box["height"])
    page.mouse.down()
    for fx, fy in corners[1:]:
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"], steps=15)
    page.mouse.up()
    page.wait_for_function(f"{STATE}.selection.length > 0")
    xs = page.evaluate("Array.from({length: 160}, (_, i) => window.transferkit.scatterplot.getScreenPosition(i)[0])")
    inside = sum(1 for x in xs if 0.02 * box["width"] < x < 0.5 * box["width"])
    assert abs(len(state(page)["selection"]) - inside) <= 2  # points on the lasso's edge may fall either way


@pytest.mark.parametrize("kind", ["empty", "one-class", "no-labels"])
def test_edge_stores_still_work(open_page, sample_store, tmp_path, kind):
    rows = tk.EmbeddingStore.open(sample_store).rows()
    rows = {"empty": [], "one-class": [r for r in rows if r["label"] == "ants"][:20],
            "no-labels": [{**r, "label": ""} for r in rows[:25]]}[kind]
    with running_server(edge_store(tmp_path, sample_store, rows)) as url:
        page = open_page(url + "/")
        s = state(page)
        assert s["error"] is None and s["pointsDrawn"] == len(rows)
        notices = page.locator("#notices").inner_text()
        assert {"empty": "empty", "one-class": "one colour", "no-labels": "no labels"}[kind] in notices
        if kind == "empty":
            assert "empty" in page.locator("#map-status").inner_text()
            return
        page.mouse.click(*point_on_page(page, isolated_point(page)))
        page.wait_for_function(f"{STATE}.results.length === 10")
        assert state(page)["results"][0]["id"] == state(page)["query"]["id"]
        assert page.locator("#label-filter").is_disabled() == (kind == "no-labels")


def test_token_is_kept_and_sent(open_page, sample_store):
    with running_server(sample_store, token="s3cret-token") as url:
        assert httpx.get(url + "/api/info").status_code == 401
        page = open_page(url + "/?token=s3cret-token")
        s = state(page)
        assert s["error"] is None and s["pointsDrawn"] == 160
        page.mouse.click(*point_on_page(page, isolated_point(page)))
        page.wait_for_function(f"{STATE}.results.length === 10")
        # the thumbnail loads after the results render; a token that is not sent never loads it (401)
        page.wait_for_function("document.querySelector('#results img')?.complete && "
                               "document.querySelector('#results img').naturalWidth > 0", timeout=10_000)


def test_ann_index_answers_and_says_so(open_page, sample_store, tmp_path):
    store = tmp_path / "indexed"
    shutil.copytree(sample_store, store)
    tk.build_index(tk.EmbeddingStore.open(store))
    with running_server(store) as url:
        page = open_page(url + "/")
        assert not page.locator("#exact").is_checked() and page.locator("#exact").is_enabled()
        page.mouse.click(*point_on_page(page, isolated_point(page)))
        page.wait_for_function(f"{STATE}.results.length === 10")
        assert state(page)["answeredBy"] == "ann" and "ANN index" in page.locator("#search-status").inner_text()
        page.check("#exact")
        page.locator("#results .card").first.click()
        page.wait_for_function(f"{STATE}.answeredBy === 'exact'")
        assert "exact search" in page.locator("#search-status").inner_text()


def test_run_colours_by_prediction(open_page, sample_store, tmp_path):
    run = tmp_path / "run"
    tk.train(SAMPLE, out=run, model="tiny_cnn", epochs=1, weights="default", quiet=True, num_workers=0)
    with running_server(sample_store, run=run) as url:
        page = open_page(url + "/")
        options = page.locator("#colour-by option").all_inner_texts()
        assert options == ["label", "predicted label", "correct vs wrong"]
        page.select_option("#colour-by", "correct")
        page.wait_for_function(f"{STATE}.colourBy === 'correct'")
        legend = page.locator("#legend").inner_text()
        counts = [int(n) for n in re.findall(r"\((\d+)\)", legend)]
        assert sum(counts) == 160 and ("wrong" in legend or "correct" in legend)
        page.mouse.click(*point_on_page(page, isolated_point(page)))
        page.wait_for_function(f"{STATE}.item && {STATE}.results.length === 10")
        item = state(page)["item"]
        assert item["predicted"] is not None and item["predicted"]["label"] in ("ants", "bees")
        assert f"{100 * item['predicted']['confidence']:.1f}%" in page.locator("#item").inner_text()


def test_api_docs_render_offline(browser, base_url):
    """/docs draws the API with no request leaving this machine (every other host is refused)."""
    context = browser.new_context()
    try:
        page = context.new_page()
        outside = []

        def only_local(route):
            if route.request.url.startswith(base_url):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_local)
        page.goto(base_url + "/docs")
        page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=30_000)
        paths = page.locator(".swagger-ui .opblock-summary-path").all_inner_texts()
        assert {"/api/info", "/api/points", "/api/search"} <= {p.replace("\u200b", "") for p in paths}
        assert outside == []
    finally:
        context.close()
