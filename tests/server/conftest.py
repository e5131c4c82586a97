"""Stores and clients for the web app's API tests: the bundled sample embedded with the tiny test backbone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import transferkit as tk

SAMPLE = Path(tk.__file__).parent / "sample_data" / "hymenoptera_mini"
LOCAL = "http://127.0.0.1"


def tiny_extractor():
    # "default" is the tiny backbone's fixed seeded initialisation, so a rebuilt model embeds queries the same way
    return tk.Extractor.from_backbone("tiny_cnn", weights="default")


def make_client(store, **kwargs):
    from fastapi.testclient import TestClient

    from transferkit.server import create_app

    kwargs.setdefault("refresh_interval", 0.0)
    base_url = kwargs.pop("base_url", LOCAL)
    raise_server_exceptions = kwargs.pop("raise_server_exceptions", True)
    return TestClient(create_app(store, **kwargs), base_url=base_url, raise_server_exceptions=raise_server_exceptions)


@pytest.fixture(scope="session")
def sample_copy(tmp_path_factory) -> Path:
    """A private copy of the bundled sample (tests add files and links next to it)."""
    root = tmp_path_factory.mktemp("sample") / "hymenoptera_mini"
    shutil.copytree(SAMPLE, root)
    return root


@pytest.fixture(scope="session")
def tiny_store(sample_copy, tmp_path_factory) -> Path:
    """The sample's 160 images embedded with ``tiny_cnn`` (read-only for tests: copy it to change it)."""
    path = tmp_path_factory.mktemp("stores") / "tiny"
    tk.embed_folder(tiny_extractor(), sample_copy, path, quiet=True)
    return path


@pytest.fixture
def store_copy(tiny_store, tmp_path) -> Path:
    """A writable copy of ``tiny_store``."""
    dest = tmp_path / "store"
    shutil.copytree(tiny_store, dest)
    return dest


@pytest.fixture(scope="session")
def tiny_run(sample_copy, tmp_path_factory) -> Path:
    """A one-epoch ``tiny_cnn`` run on the sample."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    tk.train(sample_copy, out=out, model="tiny_cnn", epochs=1, weights="default", quiet=True, num_workers=0)
    return out


@pytest.fixture(scope="session")
def client(tiny_store):
    with make_client(tiny_store) as c:
        yield c


@pytest.fixture(scope="session")
def all_ids(tiny_store) -> list[str]:
    return [str(i) for i in tk.EmbeddingStore.open(tiny_store).snapshot()["id"].tolist()]


def jpeg_bytes(size=(64, 48), colour=(200, 30, 30)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def helpers():
    """The module's helpers, for tests (the test folder is not a package)."""
    import types

    return types.SimpleNamespace(make_client=make_client, jpeg_bytes=jpeg_bytes, tiny_extractor=tiny_extractor, SAMPLE=SAMPLE)
