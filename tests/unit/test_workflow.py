"""The seven-step pipeline on synthetic data with the tiny test backbone."""

from __future__ import annotations

import json
import re

import pytest

import transferkit as tk
from transferkit.cli import main

SECTIONS = ("dataset", "strategy", "training", "metrics", "embedding", "retrieval", "gallery", "curation")


EVENTS: list = []


@pytest.fixture(scope="module")
def result(dataset_factory, tmp_path_factory):
    data = dataset_factory("split", per_class=12, val_per_class=4)
    out = tmp_path_factory.mktemp("pipe") / "run"
    return tk.pipeline(data, out=out, model="tiny_cnn", strategy="feature-extraction", epochs=3, batch_size=8,
                       head_lr=0.05, num_workers=0, progress=EVENTS.append)


def test_pipeline_reports_each_step_and_the_long_tasks_as_events(result):
    steps = [e.message.split("]")[0] + "]" for e in EVENTS if e.kind == "message" and e.message.startswith("[")]
    assert steps == ["[1-3/7]", "[4/7]", "[5/7]", "[6/7]", "[7/7]"]
    assert EVENTS[-1].kind == "message" and EVENTS[-1].message == f"Report: {result.report_path}"
    tasks = {e.task for e in EVENTS if e.kind == "start"}
    assert {"tsne", "thumbnails"} <= tasks  # the plot step's long parts
    ends = [e for e in EVENTS if e.kind == "end" and e.task == "tsne"]
    assert len(ends) == 1 and ends[0].completed == ends[0].total
    assert any(e.kind == "warning" and e.message.startswith("Perplexity 30 is too large for 48 points") for e in EVENTS)


def test_pipeline_writes_every_output(result):
    out = result.run.path
    for name in ("model.safetensors", "model.json", "metrics.json", "history.csv", "confusion_matrix.png", "report.html",
                 "pipeline.json", "plots/pca.png", "plots/tsne.png", "plots/pca.html", "plots/tsne.html"):
        assert (out / name).is_file(), name
    assert len(result.store) == 3 * (12 + 4)
    summary = json.loads((out / "pipeline.json").read_text())
    assert summary["retrieval"]["p_at_1"] == pytest.approx(result.retrieval["p_at_1"])
    assert 0.0 <= summary["index"]["recall_at_10"] <= 1.0


def test_report_has_every_section_and_inline_images(result):
    html = result.report_path.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    srcs = re.findall(r'src="([^"]+)"', html)
    assert srcs and all(s.startswith("data:") for s in srcs)
    assert "feature-extraction" in html


def test_gallery_has_one_query_per_class_with_five_results(result):
    assert sorted(g["query_label"] for g in result.gallery) == ["blue", "green", "red"]
    for g in result.gallery:
        assert len(g["results"]) == 5
        assert all(r["path"] != g["query_path"] for r in g["results"])  # the query itself is excluded
        assert all(r["correct"] == (r["label"] == g["query_label"]) for r in g["results"])
        scores = [r["score"] for r in g["results"]]
        assert scores == sorted(scores, reverse=True)


def test_colour_classes_are_retrievable(result):
    # The classes differ by colour only, so even the tiny backbone's features retrieve them.
    assert result.retrieval["p_at_1"] >= 0.9


def test_result_search_by_path_returns_itself_first(result):
    first = result.gallery[0]["query_path"]
    hits = result.search(first, top_k=3)
    assert hits[0]["path"] == first and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_rerun_reuses_the_finished_training_and_embeddings(result, dataset_factory, capsys):
    data = dataset_factory("split", per_class=12, val_per_class=4)
    before = (result.run.path / "model.safetensors").stat().st_mtime_ns
    again = tk.pipeline(data, out=result.run.path, model="tiny_cnn", strategy="feature-extraction", epochs=3, batch_size=8,
                        head_lr=0.05, num_workers=0, quiet=True)
    assert (result.run.path / "model.safetensors").stat().st_mtime_ns == before
    assert again.run.metrics["val_accuracy"] == result.run.metrics["val_accuracy"]
    embedded = json.loads((result.run.path / "pipeline.json").read_text())["embed"]
    assert embedded["unchanged"] == len(result.store) and embedded["added"] == 0


def test_pipeline_cli_json(dataset_factory, tmp_path, capsys):
    data = dataset_factory("flat", per_class=10)
    code = main(["pipeline", str(data), "--model", "tiny_cnn", "--strategy", "feature-extraction", "--epochs", "2",
                 "--out", str(tmp_path / "run"), "--no-tsne", "--json", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out)
    assert summary["strategy"] == "feature-extraction"
    assert set(summary["plots"]) == {"PCA", "PCA (interactive)"}
    assert (tmp_path / "run" / "report.html").is_file()


def test_pipeline_bad_data_is_a_one_line_error(tmp_path, capsys):
    code = main(["pipeline", str(tmp_path / "missing"), "--model", "tiny_cnn"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("Error: Dataset folder not found") and "Traceback" not in err


def test_the_store_gets_label_issues_and_outliers_in_the_report(result):
    curation = json.loads((result.run.path / "curation.json").read_text())
    issues, outliers = curation["label_issues"], curation["outliers"]
    assert issues["num_images"] == 48 and issues["classes"] == ["blue", "green", "red"]
    assert issues["num_issues"] <= 2  # colour classes: nothing is mislabelled
    assert outliers["num_images"] == 48 and len(outliers["outliers"]) == 48
    html = result.report_path.read_text(encoding="utf-8")
    section = html.split('id="curation"')[1].split("</section>")[0]
    assert "Likely label errors" in section and "of 48 images have a label the 5-fold heads" in section
    dups = curation["duplicates"]
    assert dups["num_images"] == 48 and dups["num_groups"] == len(dups["groups"])
    # every member of a group is a copy of its kept image: same class (the colours differ between classes)
    assert all(len({p.split("/")[-2] for p in g["paths"]}) == 1 for g in dups["groups"])
    assert "groups of copies among 48 images" in section
    assert section.count('class="card"') == min(issues["num_issues"], 8) + 8 + min(dups["num_groups"], 8)
