"""Injected edits (resize, JPEG 30, 10% crop, flip, colour) are confirmed by the pixel signal; other pictures are not."""

from __future__ import annotations

import numpy as np
import pytest
from duplicate_edits import TARGET_EDITS, make_copy
from PIL import Image

from transferkit.curate.duplicates import PIXEL_THRESHOLD, group_duplicates
from transferkit.curate.pixels import pixel_signature, pixel_similarity


def _picture(rng, path, size=(120, 90)):
    # a smooth random picture with some structure: blobs at 6 x 5, upsampled
    small = rng.integers(0, 255, (5, 6, 3)).astype("uint8")
    Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(path, quality=95)
    return path


@pytest.fixture(scope="module")
def injected(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("injected")
    rng = np.random.default_rng(0)
    rows, source = [], []
    for i in range(8):
        src = _picture(rng, tmp / f"o{i}.jpg")
        rows.append({"id": f"o{i}", "path": str(src), "fingerprint": f"o{i}", "width": 120, "height": 90})
        source.append(i)
        for edit in TARGET_EDITS:
            dest = make_copy(src, tmp / f"c{i}_{edit}.jpg", edit, seed=i)
            with Image.open(dest) as im:
                w, h = im.size
            rows.append({"id": f"c{i}_{edit}", "path": str(dest), "fingerprint": f"c{i}{edit}", "width": w, "height": h})
            source.append(i)
    return rows, np.asarray(source)


def test_every_edit_scores_above_the_threshold_and_other_pictures_below(injected):
    rows, source = injected
    sigs = [pixel_signature(r["path"]) for r in rows]
    scores = np.asarray([[pixel_similarity(a, b) for b in sigs] for a in sigs])
    same = source[:, None] == source[None, :]
    assert scores[same].min() >= PIXEL_THRESHOLD and scores[~same].max() < 0.8


def test_groups_have_recall_and_precision_one_when_cosine_cannot_tell(injected):
    rows, source = injected
    # every pair at cosine 0.85 (a shared direction plus orthonormal parts): all are candidates below the accept
    # threshold, so only the pixels decide
    n = len(rows)
    ortho = np.linalg.qr(np.random.default_rng(1).normal(size=(n + 1, n + 1)))[0]
    x = (np.sqrt(0.85) * ortho[:, :1].T + np.sqrt(0.15) * ortho[:, 1:].T).astype(np.float32)
    np.testing.assert_allclose((x @ x.T)[np.triu_indices(n, 1)], 0.85, atol=1e-4)
    report = group_duplicates(rows, x)
    groups = sorted(sorted(g.ids) for g in report.groups)
    assert len(groups) == 8 and all(len(g) == 1 + len(TARGET_EDITS) for g in groups)
    assert all(len({source[int(i[1])] for i in g}) == 1 for g in groups)
    assert {g.keep for g in report.groups} == {f"o{i}" for i in range(8)}  # the original is the largest copy
    assert report.extra["pixel_read"] == len(rows) and report.extra["pixel_unreadable"] == 0


def test_the_checker_keeps_few_prepared_rows_and_scores_the_same(injected, monkeypatch):
    from transferkit.curate import pixels

    rows, _ = injected
    paths = [r["path"] for r in rows[:8]]
    pairs = [(i, j) for i in range(8) for j in range(8) if i != j]
    full = pixels.PixelChecker(paths)
    want = [full.similarity(i, j) for i, j in pairs]
    monkeypatch.setattr(pixels, "PREPARED_ROWS", 2)
    small = pixels.PixelChecker(paths)
    got = [small.similarity(i, j) for i, j in pairs]
    assert got == want and len(small._prepared) == 2
    assert small.num_read == 8  # the thumbnails themselves are read once and kept
