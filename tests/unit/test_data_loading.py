"""Decoding without PIL's process-wide state, and DataLoader workers in a process that has LanceDB loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from transferkit.data.decode import UnreadableImageError, header_problem, load_image


def _png_header(path, width: int, height: int) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_pixel_limit_is_ours_alone_and_leaves_pils_settings_alone(tmp_path):
    """Our limit is checked on the header; PIL's own (its warning above 89.5 MP, its error above
    twice that) neither fires for images our limit allows nor is changed to make it agree."""
    before = (Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    big, huge = tmp_path / "big.png", tmp_path / "huge.png"
    _png_header(big, 10_000, 9_500)  # 95 MP: above PIL's warning limit, below our default
    _png_header(huge, 20_000, 20_000)  # 400 MP: PIL's open refuses it
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert header_problem(big) is None
        assert header_problem(huge, max_pixels=None) is None
        assert "20000x20000 pixels exceeds the limit of 100,000,000" in header_problem(huge)
        assert "`max_pixels` (TRANSFERKIT_MAX_PIXELS)" in header_problem(huge)
        with pytest.raises(UnreadableImageError, match="20000x20000 pixels exceeds the limit of 1,000"):
            load_image(huge, max_pixels=1000)
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]
    assert (Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before
    with pytest.raises(Image.DecompressionBombError):  # PIL's own check still applies to PIL's own open
        Image.open(huge)


def test_header_check_reports_files_that_are_not_images(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "two.png").write_bytes(b"\x00\x01")
    Image.new("RGB", (3, 2)).save(tmp_path / "ok.png")
    assert header_problem(tmp_path / "empty.png") == "empty file"
    assert "cannot identify image file" in header_problem(tmp_path / "two.png")
    assert header_problem(tmp_path / "ok.png") is None
    assert "No such file" in header_problem(tmp_path / "missing.png")


_LOADER_AFTER_LANCEDB = """
import json, sys
import torch
from transferkit.backbones import Preprocessing
from transferkit.data.folders import discover
from transferkit.data.loading import make_loader, worker_context

if __name__ == "__main__":
    before = worker_context().get_start_method()
    from transferkit.store.store import EmbeddingStore
    store = EmbeddingStore.create(sys.argv[2], model_id={"backbone": "x", "weights": "w", "dim": 4})
    store.upsert([{"id": "a", "vector": [1.0, 0.0, 0.0, 0.0]}])
    assert "lancedb" in sys.modules and len(store) == 1
    splits = discover(sys.argv[1], check_files=False)
    pre = Preprocessing(input_size=16, resize_size=16)
    loader = make_loader(splits.train, pre.eval_transform(), batch_size=4, device=torch.device("cpu"), num_workers=2)
    labels, bad, shapes = [], [], set()
    for x, y, idx, b in loader:
        bad += [(int(i), r[:20]) for i, r in b]
        if x is not None:
            labels += y.tolist()
            shapes.add(tuple(x.shape[1:]))
    print(json.dumps({"before": before, "after": loader.multiprocessing_context.get_start_method(),
                      "labels": sorted(labels), "bad": len(bad), "shapes": sorted(shapes)}))
"""


def test_loader_workers_run_in_a_process_that_has_lancedb_loaded(tmp_path, synth):
    data = synth.make_dataset(tmp_path / "d", classes=("blue", "red"), per_class=5, val_per_class=1)
    (data / "train" / "red" / "broken.png").write_bytes(b"not a png")
    script = tmp_path / "train_after_store.py"  # a script file: fork-server workers import its __main__ guard
    script.write_text(_LOADER_AFTER_LANCEDB)
    proc = subprocess.run([sys.executable, str(script), str(data), str(tmp_path / "store")], capture_output=True, text=True,
                          timeout=240, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] == "fork"  # nothing fork-unsafe loaded yet: no fork-server start-up to pay
    assert out["after"] in ("forkserver", "spawn")
    assert out["labels"] == [0] * 5 + [1] * 5 and out["bad"] == 1 and out["shapes"] == [[3, 16, 16]]


def test_loader_batches_are_those_of_the_dataset(tmp_path, synth):
    import torch

    from transferkit.backbones import Preprocessing
    from transferkit.data.folders import discover
    from transferkit.data.loading import make_loader

    data = synth.make_dataset(tmp_path / "d", classes=("blue", "red"), per_class=3, val_per_class=1)
    splits = discover(data)
    pre = Preprocessing(input_size=8, resize_size=8)
    batches = list(make_loader(splits.train, pre.eval_transform(), batch_size=4, device=torch.device("cpu"), num_workers=0))
    assert [len(y) for _, y, _, _ in batches] == [4, 2]
    idx = torch.cat([i for _, _, i, _ in batches]).tolist()
    assert idx == list(range(6)) and torch.cat([y for _, y, _, _ in batches]).tolist() == splits.train.labels
    first = pre.eval_transform()(load_image(splits.train.paths[0]))
    np.testing.assert_allclose(batches[0][0][0].numpy(), first.numpy())
