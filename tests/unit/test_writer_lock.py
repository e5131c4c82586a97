"""One embedding job at a time per store: a second writer stops at once with a message, and nothing is lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import transferkit as tk
from transferkit.errors import StoreError
from transferkit.store.writer_lock import WriterLock

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "transferkit" / "sample_data" / "hymenoptera_mini"


def test_a_second_writer_is_refused_while_the_first_holds_the_store(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    shutil.move(data / "val", tmp_path / "val-later")
    first = tk.embed_folder(tk.Extractor.from_backbone("tiny_cnn"), data, tmp_path / "s", quiet=True)
    shutil.move(tmp_path / "val-later", data / "val")
    store = tk.EmbeddingStore.open(tmp_path / "s")
    with WriterLock(store):  # another job, mid-way
        with pytest.raises(StoreError, match="Another job is writing to the embedding store .* run this again"):
            tk.embed_folder(tk.Extractor.from_backbone("tiny_cnn"), data, tmp_path / "s", quiet=True)
        assert len(tk.EmbeddingStore.open(tmp_path / "s")) == first.added  # the refused job changed nothing
    done = tk.embed_folder(tk.Extractor.from_backbone("tiny_cnn"), data, tmp_path / "s", quiet=True)
    assert done.unchanged == first.added and done.added == 160 - first.added > 0
    ids = tk.EmbeddingStore.open(tmp_path / "s").snapshot()["id"]
    assert len(ids) == len(set(ids)) == 160


def test_the_lock_is_released_when_a_job_fails(tmp_path, monkeypatch):
    from transferkit.embed import local

    def broken(*_a, **_k):
        raise RuntimeError("planning failed")

    with monkeypatch.context() as m:
        m.setattr(local, "plan_embedding", broken)
        with pytest.raises(RuntimeError, match="planning failed"):
            tk.embed_folder(tk.Extractor.from_backbone("tiny_cnn"), SAMPLE, tmp_path / "s", quiet=True)
    assert tk.embed_folder(tk.Extractor.from_backbone("tiny_cnn"), SAMPLE, tmp_path / "s", quiet=True).added == 160
    store = tk.EmbeddingStore.open(tmp_path / "s")
    with pytest.raises(StoreError):
        with WriterLock(store):
            WriterLock(store)
    WriterLock(store).release()  # free again after both
