"""Projections (PCA, t-SNE, UMAP), the PNG and HTML plots, and the `plot` command on a real store."""

from __future__ import annotations

import base64
import io
import json
import re
import sys
import types

import numpy as np
import pytest
from PIL import Image

import transferkit as tk
from transferkit import viz
from transferkit.errors import ConfigError, DataError, MissingDependencyError, UnknownNameError
from transferkit.viz import plots, projection, tsne


def clusters(n_per=50, dim=32, k=3, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 3
    x = np.concatenate([c + rng.normal(size=(n_per, dim)) * spread for c in centres]).astype(np.float32)
    labels = np.repeat([f"class{i}" for i in range(k)], n_per)
    return x, labels


def knn_accuracy(coords, labels):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return cross_val_score(KNeighborsClassifier(5), coords, labels, cv=5).mean()


# --------------------------------------------------------------------------- project


def test_pca_projection_values():
    x, labels = clusters()
    p = viz.project(x, method="pca")
    assert p.coords.shape == (150, 2) and p.coords.dtype == np.float32
    assert p.method == "pca" and p.num_total == 150 and not p.is_subsampled
    np.testing.assert_array_equal(p.indices, np.arange(150))
    v1, v2 = p.explained_variance
    assert 0 < v2 <= v1 < 1 and v1 + v2 > 0.8  # three well-separated clusters lie in a plane
    assert p.notices == []
    # PC1 is the direction of largest variance: the coordinates' variances match the ratios
    assert p.coords[:, 0].var() > p.coords[:, 1].var()
    assert knn_accuracy(p.coords, labels) > 0.9
    np.testing.assert_array_equal(viz.project(x, method="pca").coords, p.coords)  # deterministic


@pytest.mark.parametrize("fast", [True, False])
def test_tsne_separates_three_clusters(fast):
    x, labels = clusters(n_per=60, spread=1.0)
    p = viz.project(x, method="tsne", seed=0, n_jobs=1, fast=fast)
    assert p.coords.shape == (180, 2) and np.isfinite(p.coords).all()
    assert p.perplexity == 30.0 and p.notices == []
    assert knn_accuracy(p.coords, labels) > 0.9


def test_tsne_perplexity_clamped_with_notice():
    x, _ = clusters(n_per=10)  # 30 points: perplexity must be <= 29 / 3
    p = viz.project(x, method="tsne", perplexity=30, n_jobs=1)
    assert p.perplexity == pytest.approx(29 / 3)
    assert len(p.notices) == 1
    assert re.search(r"Perplexity 30 is too large for 30 points .* using 9\.67", p.notices[0])
    assert p.coords.shape == (30, 2) and np.isfinite(p.coords).all()


def test_tsne_reports_its_iterations_and_notices_as_events(capsys):
    x, _ = clusters(n_per=10)  # 30 points: the perplexity is clamped, fast settings apply from 5,000 only
    events = []
    p = viz.project(x, method="tsne", perplexity=30, n_jobs=1, progress=events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "warning" and events[0].message == p.notices[0]  # the notice comes before the long part
    bar = [e for e in events if e.task == "tsne"]
    assert bar[0].kind == "start" and bar[-1].kind == "end" and bar[0].total == 250 + 500
    advances = [e.completed for e in bar if e.kind == "advance"]
    assert advances == list(range(50, 751, 50))  # every 50 iterations, up to the total
    assert capsys.readouterr().err == ""  # a callback replaces the console
    viz.project(x, method="tsne", perplexity=5, n_jobs=1, quiet=True)
    assert capsys.readouterr().err == ""


def test_pca_reports_nothing_but_its_notices():
    x, _ = clusters(n_per=100)
    events = []
    viz.project(x, method="pca", progress=events.append)
    assert events == []
    viz.project(x, method="pca", max_points=120, progress=events.append)
    assert [e.kind for e in events] == ["warning"] and "raise `max_points` to use more" in events[0].message


def test_public_names_are_the_viz_functions():
    assert (tk.project, tk.plot_png, tk.plot_html, tk.Projection) == (viz.project, viz.plot_png, viz.plot_html, viz.Projection)
    assert tk.check_projection_method("t-SNE") == "tsne"


def test_subsampling_above_max_points():
    x, labels = clusters(n_per=100)
    p = viz.project(x, method="pca", max_points=120, seed=3)
    assert p.coords.shape == (120, 2) and p.num_total == 300 and p.is_subsampled
    assert np.all(np.diff(p.indices) > 0) and p.indices.max() < 300
    assert "random subsample of 120 of 300 embeddings (seed 3)" in p.notices[0]
    # the kept rows are the indexed rows: projecting them alone gives the same picture
    np.testing.assert_allclose(np.abs(viz.project(x[p.indices]).coords), np.abs(p.coords), atol=1e-4)
    np.testing.assert_array_equal(viz.project(x, max_points=120, seed=3).indices, p.indices)


def test_tsne_default_limit_is_applied(monkeypatch):
    monkeypatch.setattr(projection, "DEFAULT_MAX_POINTS", 40)
    x, _ = clusters(n_per=20)
    assert viz.project(x, method="tsne", n_jobs=1).num_points == 40
    assert viz.project(x, method="pca").num_points == 60  # PCA has no default limit


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "tnse"}, UnknownNameError, r"Unknown projection method 'tnse'\. Did you mean 'tsne'\?"),
        ({"perplexity": -1}, ConfigError, r"`perplexity` of project must be a positive float; got -1\.0\."),
        ({"perplexity": "abc"}, ConfigError, r"`perplexity` of project must be a positive float; got 'abc'\."),
        ({"max_points": 0}, ConfigError, r"`max_points` of project must be an int >= 2 or None; got 0\."),
        ({"seed": -2}, ConfigError, r"`seed` of project must be a non-negative int; got -2\."),
    ],
)
def test_bad_parameters(kwargs, error, match):
    x, _ = clusters(n_per=5)
    with pytest.raises(error, match=match):
        viz.project(x, **kwargs)


def test_bad_data():
    with pytest.raises(DataError, match=r"t-SNE needs at least 5 embeddings; got 4\."):
        viz.project(np.zeros((4, 8)), method="tsne")
    with pytest.raises(DataError, match=r"2-D array \(n_samples, n_features\); got shape \(10,\)"):
        viz.project(np.zeros(10))
    with pytest.raises(DataError, match="at least 2 dimensions"):
        viz.project(np.zeros((10, 1)))
    x = np.ones((10, 4))
    x[3, 1] = np.nan
    with pytest.raises(DataError, match="1 embedding"):
        viz.project(x)


def test_umap_missing_raises_before_any_work(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # makes `import umap` raise ImportError
    # invalid data too: the dependency check must come first
    with pytest.raises(MissingDependencyError, match=r"pip install 'transferkit\[umap\]'"):
        viz.project("not even an array", method="umap")
    with pytest.raises(ImportError):  # also catchable as the built-in
        viz.check_projection_method("umap")


def test_umap_uses_the_umap_package(monkeypatch):
    calls = {}

    class FakeUMAP:
        def __init__(self, **kwargs):
            calls.update(kwargs)

        def fit_transform(self, x):
            return x[:, :2] * 2

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    x, _ = clusters(n_per=4)
    p = viz.project(x, method="UMAP", seed=7)
    assert p.method == "umap"
    np.testing.assert_allclose(p.coords, x[:, :2] * 2)
    assert calls["random_state"] == 7 and calls["n_neighbors"] == 11 and calls["n_components"] == 2


# --------------------------------------------------------------------------- PNG


def test_plot_png_size_and_colours(tmp_path):
    x, labels = clusters()
    p = viz.project(x)
    out = viz.plot_png(p, labels, tmp_path / "sub" / "pca.png")
    assert out == tmp_path / "sub" / "pca.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (900, 700)
        rgb = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
    # the three tab10 colours (blue, orange, green) are drawn
    for colour in [(31, 119, 180), (255, 127, 14), (44, 160, 44)]:
        assert (np.abs(rgb - colour).sum(axis=1) < 30).sum() > 50, colour
    assert len(np.unique(rgb, axis=0)) > 10
    assert [f.name for f in out.parent.iterdir()] == ["pca.png"]  # no temp files left


def test_plot_png_custom_size_and_subsampled_labels(tmp_path):
    x, labels = clusters(n_per=40)
    p = viz.project(x, method="pca", max_points=60)
    out = viz.plot_png(p, labels, tmp_path / "p.png", width=400, height=300, title="mine")  # labels for all 120 rows
    with Image.open(out) as im:
        assert im.size == (400, 300)
    viz.plot_png(p, labels[p.indices], tmp_path / "q.png")  # or labels for the used rows only
    with pytest.raises(DataError, match="Got 7 labels for a projection of 120 embeddings"):
        viz.plot_png(p, labels[:7], tmp_path / "r.png")


def test_default_titles():
    x, _ = clusters()
    pca = viz.project(x)
    assert re.fullmatch(r"PCA of 150 embeddings - PC1\+PC2 explain \d+\.\d% of variance", plots._default_title(pca))
    assert plots._axis_titles(pca)[0].startswith("PC1 (") and "% of variance)" in plots._axis_titles(pca)[0]
    sub = viz.project(x, max_points=100)
    assert plots._default_title(sub).startswith("PCA of 100 of 150 embeddings (random subsample)")


# --------------------------------------------------------------------------- HTML


def _plotly_traces(page: str) -> list[dict]:
    start = page.index('Plotly.newPlot(')
    start = page.index("[", start)
    traces, _ = json.JSONDecoder().raw_decode(page[start:])
    return traces


def _array(value) -> np.ndarray:
    if isinstance(value, dict):  # plotly >= 6 typed-array encoding
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i in range(10):
        p = folder / f"img{i}.jpg"
        Image.new("RGB", (200, 120), (20 * i, 100, 255 - 20 * i)).save(p)
        paths.append(p)
    broken = folder / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    paths += [broken, folder / "missing.jpg"]
    return paths


def test_plot_html_points_thumbnails_and_self_contained(tmp_path, images):
    x, _ = clusters(n_per=4)  # 12 points
    labels = ["cat"] * 6 + ["<b>dog</b>"] * 6
    before = {p: p.read_bytes() for p in images if p.exists()}
    p = viz.project(x)
    out = viz.plot_html(p, labels, images, tmp_path / "plot.html")
    page = out.read_text(encoding="utf-8")

    traces = _plotly_traces(page)
    assert sum(len(_array(t["x"])) for t in traces) == 12
    assert sorted(i for t in traces for i in t["customdata"]) == list(range(12))
    xs = np.concatenate([_array(t["x"]) for t in traces])
    np.testing.assert_allclose(np.sort(xs), np.sort(p.coords[:, 0]), rtol=1e-5)

    thumbs = json.loads(re.search(r'<script type="application/json" id="tk-thumbs">(.*?)</script>', page, re.S).group(1))
    assert len(thumbs) == 12
    assert all(t.startswith("data:image/jpeg;base64,") for t in thumbs[:10])
    assert thumbs[10] is None and thumbs[11] is None  # unreadable and missing: no thumbnail, no crash
    with Image.open(io.BytesIO(base64.b64decode(thumbs[0].split(",", 1)[1]))) as im:
        assert im.size == (64, 38)
    assert "2 of 12 images could not be read" in page
    events = []
    viz.plot_html(p, labels, images, tmp_path / "again.html", progress=events.append)
    bar = [(e.kind, e.task, e.total, e.completed) for e in events if e.kind != "warning"]
    assert bar == [("start", "thumbnails", 12, 0), ("advance", "thumbnails", 12, 12), ("end", "thumbnails", 12, 12)]
    assert [e.message for e in events if e.kind == "warning"] == ["2 of 12 images could not be read; those points have no thumbnail."]

    # hover text names the path and the (escaped) label
    hover = [h for t in traces for h in t["hovertext"]]
    assert any(str(images[0]) in h and "label: cat" in h for h in hover)
    assert "<b>dog</b>" not in page
    assert {t["name"] for t in traces} == {"cat (6)", "&lt;b&gt;dog&lt;/b&gt; (6)"}  # plotly renders tags in names
    assert any(h.startswith("label: &lt;b&gt;dog&lt;/b&gt;<br>") for h in hover)

    assert not re.search(r"<script[^>]+src=", page)  # plotly.js inlined, no CDN
    assert len(page) > 1_000_000  # the plotly.js bundle is in the file
    assert {p: p.read_bytes() for p in images if p.exists()} == before  # images only read


def test_plot_html_thumbnail_cap_and_no_thumbnails(tmp_path, images):
    x, labels = clusters(n_per=4)
    p = viz.project(x)
    events = []
    out = viz.plot_html(p, labels, images, tmp_path / "capped.html", max_thumbnails=5, progress=events.append)
    page = out.read_text(encoding="utf-8")
    assert [e.kind for e in events] == ["warning"]
    assert events[0].message.startswith("No hover thumbnails: 12 points is over the limit of 5.")
    assert "No hover thumbnails" in page and "data:image/jpeg" not in page
    page = viz.plot_html(p, labels, images, tmp_path / "off.html", thumbnails=False).read_text(encoding="utf-8")
    assert "data:image/jpeg" not in page
    page = viz.plot_html(p, None, None, tmp_path / "bare.html").read_text(encoding="utf-8")
    assert sum(len(_array(t["x"])) for t in _plotly_traces(page)) == 12


def test_plot_html_refuses_to_overwrite_an_image(tmp_path, images):
    x, labels = clusters(n_per=4)
    with pytest.raises(ConfigError, match="is one of the plotted images"):
        viz.plot_html(viz.project(x), labels, images, images[0])


# --------------------------------------------------------------------------- CLI (thin layer over viz)


@pytest.fixture
def store(tmp_path, images):
    pytest.importorskip("lancedb")
    from transferkit.store.store import EmbeddingStore

    x, _ = clusters(n_per=4, dim=8)
    st = EmbeddingStore.create(tmp_path / "store", model_id={"backbone": "tiny", "dim": 8})
    st.upsert(
        [
            {"id": f"r{i}", "path": str(images[i]), "label": "ab"[i % 2], "split": ["train", "val", "test"][i % 3], "vector": x[i]}
            for i in range(12)
        ]
    )
    return tmp_path / "store"


def test_cli_plot_png_and_html(tmp_path, store, capsys):
    from transferkit.cli import main

    out = tmp_path / "o.png"
    assert main(["plot", str(store), "--out", str(out), "--color", "split"]) == 0
    with Image.open(out) as im:
        assert im.size == (900, 700)
    assert f"Wrote PCA plot of 12 embeddings to {out}" in capsys.readouterr().out

    out = tmp_path / "o.html"
    assert main(["plot", str(store), "--method", "tsne", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "Warning: Perplexity 30 is too large for 12 points" in captured.err
    assert sum(len(_array(t["x"])) for t in _plotly_traces(out.read_text(encoding="utf-8"))) == 12

    calls = []
    real = tk.project
    viz_project = lambda *a, **k: calls.append(k.get("fast")) or real(*a, **k)  # noqa: E731
    import unittest.mock

    with unittest.mock.patch.object(tk, "project", viz_project):  # the CLI calls the public API
        assert main(["plot", str(store), "--method", "tsne", "--full-tsne", "--out", str(tmp_path / "f.png")]) == 0
        assert main(["plot", str(store), "--method", "tsne", "--out", str(tmp_path / "g.png")]) == 0
    assert calls == [False, True]  # --full-tsne turns the fast settings off


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--out", "o.jpg"], r"must end in \.png \(static image\) or \.html"),
        (["--out", "o.png", "--color", "lable"], r"--color must be one of: label, split; got 'lable'\. Did you mean 'label'\?"),
        (["--out", "o.png", "--method", "pcaa"], r"Unknown projection method 'pcaa'"),
    ],
)
def test_cli_plot_errors(tmp_path, store, capsys, args, match):
    from transferkit.cli import main

    assert main(["plot", str(store), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and re.search(match, err)


def test_cli_plot_umap_missing(tmp_path, monkeypatch, capsys):
    from transferkit.cli import main

    monkeypatch.setitem(sys.modules, "umap", None)
    # fails before the (non-existent) store is read
    assert main(["plot", str(tmp_path / "nope"), "--method", "umap", "--out", str(tmp_path / "u.png")]) == 2
    assert "pip install 'transferkit[umap]'" in capsys.readouterr().err


@pytest.mark.parametrize("n, k", [(50, 7), (9, 8), (300, 90)])
def test_knn_euclidean_is_exact(n, k):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    idx, dist = tsne.knn_euclidean(x, k, block_rows=17)  # several blocks, one partial
    full = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(full, np.inf)
    want = np.argsort(full, axis=1, kind="stable")[:, :k]
    assert idx.shape == dist.shape == (n, k)
    assert not (idx == np.arange(n)[:, None]).any()  # never its own neighbour
    np.testing.assert_allclose(dist, np.take_along_axis(full, want, axis=1), atol=1e-4)
    assert (np.diff(dist, axis=1) >= -1e-6).all()  # nearest first
    assert np.mean(idx == want) > 0.99  # equal up to float ties


def test_fast_tsne_settings_apply_from_the_threshold(monkeypatch):
    import openTSNE

    seen = {}

    class Spy(openTSNE.TSNE):
        def __init__(self, **kwargs):
            seen.update(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(openTSNE, "TSNE", Spy)
    monkeypatch.setattr(tsne, "FAST_TSNE_MIN_POINTS", 100)
    x, _ = clusters(n_per=40, spread=1.0)
    viz.project(x, method="tsne", seed=0, n_jobs=1)
    assert seen["n_iter"] == tsne.FAST_TSNE_ITERATIONS and seen["negative_gradient_method"] == "fft"
    seen.clear()
    viz.project(x, method="tsne", seed=0, n_jobs=1, fast=False)
    assert "n_iter" not in seen and "negative_gradient_method" not in seen
