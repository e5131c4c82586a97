"""The self-contained HTML run report and its plotting helpers."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from transferkit.report import SECTIONS, plot_confusion_matrix, plot_history, write_report

EVIL = "<script>alert('x')</script>"


def _png(path, colour=(200, 30, 30), size=(40, 30)):
    Image.new("RGB", size, colour).save(path)
    return path


def _section(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert m, sid
    return m.group(1)


@pytest.fixture
def inputs(tmp_path):
    imgs = [_png(tmp_path / f"i{i}.png", (30 * i, 80, 120)) for i in range(6)]
    history = [
        {"epoch": 1, "train_loss": 0.9, "val_loss": 0.8, "val_accuracy": 0.6, "seconds": 3.2},
        {"epoch": 2, "train_loss": 0.5, "val_loss": 0.55, "val_accuracy": 0.8, "seconds": 3.1},
        {"epoch": 3, "train_loss": 0.3, "val_loss": None, "val_accuracy": 0.85, "seconds": 3.0},
    ]
    confusion = plot_confusion_matrix(np.array([[5, 1], [2, 7]]), ["ants", EVIL], tmp_path / "cm.png")
    return {
        "title": "Run <1> & report",
        "dataset": {
            "classes": ["ants", "bees"],
            "counts": {"train": {"ants": 10, "bees": 12}, "val": {"ants": 3, "bees": 4}},
            "skipped": [{"path": "data/train/ants/bad.jpg", "reason": "cannot identify image file"}],
            "root": "data/",
        },
        "strategy": {"decision": "feature_extraction", "evidence": ["22 training images (< 1000)", f"note {EVIL}"]},
        "history": history,
        "metrics": {
            "accuracy": 0.8667,
            "per_class": {
                "ants": {"precision": 0.714, "recall": 0.833, "f1": 0.769, "support": 6},
                EVIL: {"precision": 0.875, "recall": 0.778, "f1": 0.824, "support": 9},
            },
        },
        "confusion_png": confusion,
        "plots": {"PCA": _png(tmp_path / "pca.png"), "t-SNE": _png(tmp_path / "tsne.png", (0, 0, 200))},
        "retrieval": {"p_at_1": 0.9, "p_at_5": 0.82, "p_at_10": 0.8, "map_at_10": 0.77, "index_recall": 0.98},
        "gallery": [
            {
                "query_path": str(imgs[0]),
                "query_label": "ants",
                "results": [
                    {"path": str(imgs[1]), "label": "ants", "score": 0.97, "correct": True},
                    {"path": str(imgs[2]), "label": "bees", "score": 0.91, "correct": False},
                    {"path": str(tmp_path / "gone.png"), "label": "ants", "score": 0.9},  # no `correct`: compared
                    {"path": str(imgs[3]), "label": "bees", "score": 0.88},
                    {"path": str(imgs[4]), "label": "ants", "score": 0.85, "correct": True},
                    {"path": str(imgs[5]), "label": "ants", "score": 0.80, "correct": True},  # 6th: not shown
                ],
            }
        ],
        "timings": {"train": 9.3, "embed": 2.1},
        "curation": {"label_issues": {"num_issues": 0, "num_images": 22, "issues": []},
                     "outliers": {"num_flagged": 0, "z_threshold": 3.5, "k": 10, "outliers": []}},
    }


def test_report_sections_inline_images_and_no_urls(tmp_path, inputs):
    out = write_report(tmp_path / "out" / "report.html", **inputs)
    page = out.read_text(encoding="utf-8")
    for sid in ("dataset", "strategy", "training", "metrics", "embedding", "retrieval", "gallery", *SECTIONS):
        assert f'<section id="{sid}">' in page
    srcs = re.findall(r'src="([^"]*)"', page)
    # training curves + confusion + 2 plots + query + 4 readable results (one file is gone)
    assert len(srcs) == 9
    assert all(s.startswith("data:image/") for s in srcs)
    assert "http://" not in page and "https://" not in page
    assert "Not available" not in page  # every section had data
    assert [f.name for f in out.parent.iterdir()] == ["report.html"]  # atomic: no temp file left

    # the inlined images decode to the right pictures
    with Image.open(io.BytesIO(base64.b64decode(srcs[0].split(",", 1)[1]))) as im:
        assert im.size == (1000, 380)  # training curves
    emb = _section(page, "embedding")
    assert emb.count("<img") == 2 and "<figcaption>t-SNE</figcaption>" in emb


def test_report_escapes_text(tmp_path, inputs):
    page = write_report(tmp_path / "r.html", **inputs).read_text(encoding="utf-8")
    assert EVIL not in page and "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in _section(page, "metrics")
    assert "<title>Run &lt;1&gt; &amp; report</title>" in page


def test_report_content(tmp_path, inputs):
    page = write_report(tmp_path / "r.html", **inputs).read_text(encoding="utf-8")
    ds = _section(page, "dataset")
    assert "2 classes: ants, bees" in ds and "data/train/ants/bad.jpg" in ds and "cannot identify image file" in ds
    assert re.search(r"<th>total</th><td class=\"num\"><b>22</b></td><td class=\"num\"><b>7</b></td>", ds)
    assert "feature_extraction" in _section(page, "strategy")
    tr = _section(page, "training")
    assert tr.count("<tr>") == 4 and "0.8500" in tr
    met = _section(page, "metrics")
    assert "0.8667" in met and "0.7690" in met and re.search(r'<td class="num">9</td>', met)
    ret = _section(page, "retrieval")
    for label, value in [("Precision@1", "0.9000"), ("Precision@5", "0.8200"), ("Precision@10", "0.8000"), ("mAP@10", "0.7700")]:
        assert re.search(rf"<th>{label}</th><td class=\"num\">{value}</td>", ret)
    assert "ANN index recall" in ret and "0.9800" in ret
    assert "train" in _section(page, "timings") and "9.3" in _section(page, "timings")


def test_gallery_marks(tmp_path, inputs):
    page = write_report(tmp_path / "r.html", **inputs).read_text(encoding="utf-8")
    gallery = _section(page, "gallery")
    marks = re.findall(r'class="(ok|bad)" title="[^"]*">&#(10003|10007);', gallery)
    # top 5 only; third result has no `correct` key and its label equals the query's
    assert [m[0] for m in marks] == ["ok", "bad", "ok", "bad", "ok"]
    assert all((cls == "ok") == (code == "10003") for cls, code in marks)
    assert "sim 0.970" in gallery and "sim 0.800" not in gallery
    assert gallery.count("no image") == 1  # the missing file: placeholder, no crash


def test_report_missing_sections(tmp_path):
    page = write_report(
        tmp_path / "r.html",
        title="empty",
        dataset=None,
        strategy={},
        history=[],
        metrics=None,
        confusion_png=None,
        plots={},
        retrieval=None,
        gallery=[],
    ).read_text(encoding="utf-8")
    for sid in SECTIONS:
        assert "Not available." in _section(page, sid), sid
    assert "<img" not in page


def test_missing_image_files_do_not_break_the_report(tmp_path, inputs):
    inputs["confusion_png"] = tmp_path / "nope.png"
    inputs["plots"] = {"PCA": tmp_path / "nope2.png", "HTML": tmp_path / "plot.html"}
    page = write_report(tmp_path / "r.html", **inputs).read_text(encoding="utf-8")
    assert "nope.png could not be read" in _section(page, "metrics")
    emb = _section(page, "embedding")
    assert "nope2.png could not be read" in emb and "plot.html is not an image" in emb


def test_plot_helpers(tmp_path):
    cm = np.array([[3, 0, 1], [0, 4, 0], [2, 0, 5]])
    out = plot_confusion_matrix(cm, ["a", "b", "c"], tmp_path / "cm.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300
        assert len(set(im.convert("RGB").getdata())) > 10
    with pytest.raises(ValueError, match=r"shape \(3, 3\) does not match 2 classes"):
        plot_confusion_matrix(cm, ["a", "b"], tmp_path / "x.png")
    out = plot_history([{"epoch": 1, "train_loss": 1.0, "val_accuracy": 0.5}, {"epoch": 2, "train_loss": 0.7, "val_accuracy": 0.7}],
                       tmp_path / "h.png")
    with Image.open(out) as im:
        assert im.size == (1000, 380)


def test_curation_section_lists_issues_and_says_why_a_part_is_missing(tmp_path):
    from transferkit.report.curation import curation_section

    issues = {"num_issues": 1, "num_confident": 1, "num_images": 30, "cross_validation": {"folds": 5, "accuracy": 0.9},
              "issues": [{"rank": 1, "path": str(tmp_path / "none.jpg"), "given_label": "cat", "suggested_label": "dog",
                          "score": 0.93}]}
    html = curation_section({"label_issues": issues, "outliers": {"error": "Finding outliers needs at least two images"}})
    assert "1 of 30 images have a label the 5-fold heads on the embeddings contradict (1 confident" in html
    assert "out-of-fold accuracy 0.900" in html
    assert '#1 <span class="bad">cat</span> &rarr; <span class="ok">dog</span>' in html and "score 0.930" in html
    assert "Not available: Finding outliers needs at least two images" in html
    assert curation_section(None) == '<p class="na">Not available.</p>'
    assert "Duplicates" not in html  # a curation.json from before duplicates were in it


def test_curation_section_shows_duplicate_groups_with_the_kept_image(tmp_path):
    from transferkit.report.curation import curation_section

    group = {"keep": "a", "ids": ["a", "b", "c"], "paths": [str(tmp_path / "a.jpg"), "b.jpg", "c.jpg"], "kind": "near",
             "min_similarity": 0.912}
    html = curation_section({"duplicates": {"num_groups": 1, "num_images": 50, "num_exact_pairs": 0, "num_near_pairs": 2,
                                            "num_removable": 2, "groups": [group]}})
    assert "1 groups of copies among 50 images (0 exact pairs, 2 near pairs confirmed by the pixels); 2 could be" in html
    assert html.count('class="card"') == 1 and "3 near copies" in html and "min cosine 0.912" in html
    assert "Not available: no store" in curation_section({"duplicates": {"error": "no store"}})
