"""A real headless Chromium (the system's, driven by Playwright) on the real server over a store of the bundled sample.

Playwright's own browser download does not work here, so the tests drive Debian's ``chromium``
through ``executable_path``; they skip, saying why, only when no Chromium can be found.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from webapp_support import CHROMIUM_ARGS, SAMPLE, STATIC, find_chromium, running_server

import transferkit as tk


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not (STATIC / "index.html").is_file():
        pytest.fail("The page is not built: run `make web` (cd web && npm ci && npm run build); server/static/index.html is missing.")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed: `make test` installs it (pip install -c constraints.txt -e '.[test]').")
    path = find_chromium()
    if path is None:
        pytest.skip("No Chromium found (apt-get install chromium, or set TRANSFERKIT_CHROMIUM): browser tests skipped.")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory) -> Path:
    """The bundled sample (160 images, ants and bees) embedded with efficientnet_lite0."""
    path = tmp_path_factory.mktemp("browser-stores") / "sample"
    tk.embed_folder(tk.Extractor.from_backbone("efficientnet_lite0"), SAMPLE, path, quiet=True)
    return path


@pytest.fixture(scope="session")
def base_url(sample_store) -> Iterator[str]:
    with running_server(sample_store) as url:
        yield url


@pytest.fixture
def open_page(browser):
    """``open_page(url)``: a fresh page, loaded until the app says it is ready; JavaScript errors fail the test."""
    contexts, errors = [], []

    def _open(url: str):
        context = browser.new_context(viewport={"width": 1400, "height": 860}, accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_function("window.transferkit && window.transferkit.state.ready", timeout=60_000)
        return page

    yield _open
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
