"""The page's curation panel in a real browser: label issues and outliers as cards, highlighted, clickable."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.browser

STATE = "window.transferkit.state"


def test_label_issues_and_outliers_fill_the_panel(open_page, base_url):
    page = open_page(base_url + "/")
    page.click("#find-label-issues")
    page.wait_for_function(f"{STATE}.curation && {STATE}.curation.kind === 'label-issues' && "
                           f"({STATE}.curation.ids || {STATE}.curation.error)", timeout=120_000)
    shown = page.evaluate(STATE)["curation"]
    api = httpx.get(base_url + "/api/label-issues?top=60").json()
    assert "error" not in shown and shown["ids"] == [i["id"] for i in api["issues"]]
    assert page.locator("#curation .card").count() == len(api["issues"])
    assert f"of {api['num_images']} labels contradicted" in page.locator("#curation-status").inner_text()

    page.click("#find-outliers")
    page.wait_for_function(f"{STATE}.curation.kind === 'outliers' && {STATE}.curation.ids", timeout=60_000)
    api = httpx.get(base_url + "/api/outliers?top=60").json()
    ids = page.evaluate(STATE)["curation"]["ids"]
    assert ids == [o["id"] for o in api["outliers"]] and len(ids) == 60
    page.locator("#curation .card").first.click()  # a card picks its image, like a point on the map
    page.wait_for_function(f"{STATE}.item && {STATE}.item.id === {ids[0]!r}", timeout=30_000)
