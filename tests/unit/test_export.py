"""Export to ONNX / OpenVINO IR: round trips, metadata, dynamic axes, the parity check, a run's classifier, errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import transferkit as tk
from transferkit.backbones import Preprocessing
from transferkit.backbones._module import FeatureBackbone
from transferkit.export.parity import sample_batch, sample_images
from transferkit.export.runtime import Session, onnxruntime_available

needs_ort = pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime is not installed (the test extra has it)")
TINY_PRE = Preprocessing(input_size=32, resize_size=36)


def _eager(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return module.eval()(x).numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    events = []
    result = tk.export_model("tiny_cnn", out=out, progress=events.append)
    return result, events


# -- a tiny backbone, round trip ------------------------------------------------------------------
def test_tiny_round_trip_metadata_and_parity(tiny_onnx):
    result, events = tiny_onnx
    meta = tk.read_export_metadata(result.path)
    assert meta.what == "embedder" and meta.model == "tiny_cnn" and meta.weights == "synthetic-seed0" and meta.dim == 32
    assert meta.preprocessing == tk.get_backbone_spec("tiny_cnn").weights.preprocessing
    assert meta.outputs == ["features"] and meta.classes == [] and meta.fixed_size == ""
    assert meta.input_shape == ["batch", 3, "height", "width"]  # nothing in tiny_cnn depends on the input size
    assert meta.source == {"backbone": "tiny_cnn", "weights": "default"}
    # the stored metadata is plain key/value strings any ONNX reader shows
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert json.loads(props["transferkit.preprocessing"])["crop"] == "center"
    assert json.loads(props["transferkit.preprocessing"])["interpolation"] == "bilinear"
    # the check ran at batch 1, 3 and 8 on each runtime, and its numbers are in the file and in the events
    runtimes = ["onnxruntime", "openvino"] if onnxruntime_available() else ["openvino"]
    assert [(c["runtime"], c["batch"]) for c in meta.parity] == [(r, b) for r in runtimes for b in (1, 3, 8)]
    assert all(c["min_cosine"] >= 0.9999 and c["max_abs_diff"] < 1e-4 for c in meta.parity)
    assert result.min_cosine == min(c["min_cosine"] for c in meta.parity)
    lines = [e.message for e in events if e.kind == "message"]
    assert sum(line.startswith("parity ") and "min cosine" in line for line in lines) == len(meta.parity)
    assert [e.message for e in events if e.kind == "warning"] == [f"torch.onnx export: {w['category']}" + (
        f" x{w['count']}" if w["count"] > 1 else "") + f" at {', '.join(w['where'][:3])}: {w['message']}" for w in result.warnings]
    assert list(result.path.parent.iterdir()) == [result.path]  # no temporary files left


@needs_ort
def test_tiny_dynamic_batch_and_size_match_pytorch(tiny_onnx):
    result, _ = tiny_onnx
    backbone = tk.create_backbone("tiny_cnn")
    session = Session("onnxruntime", result.path)
    for batch, size in ((1, 32), (5, 32), (2, 48), (7, 64)):
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        out = session.run(x.numpy())
        assert out.shape == (batch, 32)
        np.testing.assert_allclose(out, _eager(backbone, x), atol=1e-5)


def test_sample_images_are_real_photos_of_both_classes():
    paths = sample_images(8)
    assert len(paths) == 8 and {p.parent.name for p in paths} == {"ants", "bees"}
    x = sample_batch(TINY_PRE)
    assert x.shape == (8, 3, 32, 32) and float(x.std()) > 0.3  # photos, not blank frames


# -- efficientnet_lite0: TF "same" padding -> a fixed size ----------------------------------------
@pytest.fixture(scope="module")
def lite0_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lite0")
    events = []
    onnx_result = tk.export_model("efficientnet_lite0", out=folder / "lite0.onnx", progress=events.append)
    ir_result = tk.export_model("efficientnet_lite0", out=folder / "lite0.xml", format="openvino", quiet=True)
    return onnx_result, ir_result, events


def test_lite0_onnx_is_fixed_size_and_says_so(lite0_files):
    result, _, events = lite0_files
    meta = result.metadata
    assert meta.input_shape == ["batch", 3, 224, 224] and "Conv2dSame" in meta.fixed_size
    assert meta.preprocessing == Preprocessing(224, 256, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) and meta.dim == 1280
    messages = [e.message for e in events if e.kind == "message"]
    assert any(m.startswith("Exported for a fixed 224x224 input") and "Conv2dSame" in m for m in messages)
    # the tracer's warnings about the padding arithmetic are shown, not hidden
    tracer = [w for w in result.warnings if w["category"] == "TracerWarning"]
    assert tracer and any("transferkit/backbones/_native.py" in loc for w in tracer for loc in w["where"])
    assert any(e.kind == "warning" and "TracerWarning" in e.message for e in events)
    # parity numbers: real pretrained features keep float rounding only
    assert len(meta.parity) >= 3 and all(c["input_size"] == 224 for c in meta.parity)
    assert result.min_cosine >= 0.99999 and 0 < result.max_abs_diff < 1e-3


def test_lite0_openvino_ir_round_trip(lite0_files):
    _, result, _ = lite0_files
    xml, bin_ = result.files
    assert xml.suffix == ".xml" and bin_ == xml.with_suffix(".bin") and bin_.stat().st_size > 10e6  # fp32 weights
    meta = tk.read_export_metadata(xml)
    assert meta.model == "efficientnet_lite0" and meta.weights == "IMAGENET1K_LITE0" and meta.input_shape[1:] == [3, 224, 224]
    assert [(c["runtime"], c["batch"]) for c in meta.parity] == [("openvino", 1), ("openvino", 3), ("openvino", 8)]
    assert min(c["min_cosine"] for c in meta.parity) >= 0.9999
    # the IR runs at a batch size the check did not use
    x = sample_batch(meta.preprocessing, 5)
    out = Session("openvino", xml).run(x.numpy())
    ref = _eager(tk.create_backbone("efficientnet_lite0"), x)
    assert out.shape == (5, 1280) and _cosines(out, ref).min() >= 0.9999


# -- the parity check and the dynamic-size check fail where they must -----------------------------
class _BakedBranch(nn.Module):
    """Chooses a branch from a Python number: the trace (on zeros) keeps the other branch than real photos take."""

    def forward(self, x):
        y = x.mean(dim=(2, 3))
        return y if float(y.abs().sum()) > 0 else -y


class _SizeRoll(nn.Module):
    """Rolls its channels by a number computed from the width: right at the traced size only, and not named *Same."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        y = self.conv(x).mean(dim=(2, 3))
        return torch.roll(y, shifts=int(x.shape[-1]) // 32, dims=1)


def _backbone(module: nn.Module, dim: int) -> FeatureBackbone:
    return FeatureBackbone(module, stages=[[]], num_features=dim, name=type(module).__name__, weights_tag="none",
                           preprocessing=TINY_PRE)


def test_a_graph_that_differs_from_pytorch_is_refused_and_not_written(tmp_path):
    out = tmp_path / "bad.onnx"
    with pytest.raises(tk.ExportError, match=r"does not reproduce PyTorch on the sample photos .*min cosine -1\.0+.*"
                                             r"Nothing was written to .*bad\.onnx"):
        tk.export_model(_backbone(_BakedBranch(), 3), out=out, quiet=True)
    assert list(tmp_path.iterdir()) == []  # neither the file nor the temporary folder


def test_a_size_dependent_graph_is_exported_for_a_fixed_size(tmp_path):
    module = _backbone(_SizeRoll(), 8)
    result = tk.export_model(module, out=tmp_path / "roll.onnx", quiet=True, runtime="openvino")
    assert result.metadata.input_shape == ["batch", 3, 32, 32]
    assert "does not reproduce PyTorch at 64px" in result.metadata.fixed_size
    assert result.min_cosine >= 0.9999  # right at the size it was exported for
    assert module.model.conv.weight.device.type == "cpu" and module.training  # the caller's module is left as it was


# -- a trained run's classifier ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(split_data, tmp_path_factory):
    return tk.train(split_data, model="tiny_cnn", strategy="feature-extraction", epochs=2, head_lr=0.05, batch_size=8,
                    num_workers=0, quiet=True, out=tmp_path_factory.mktemp("run") / "run")


@needs_ort
def test_classifier_export_predicts_as_the_run(tiny_run, split_data, tmp_path):
    result = tk.export_model(tiny_run.path, out=tmp_path / "clf.onnx", quiet=True)
    meta = result.metadata
    assert meta.what == "classifier" and meta.classes == ["blue", "green", "red"] and meta.dim == 3
    assert meta.outputs == ["logits", "probabilities"] and meta.source == {"run": str(tiny_run.path.resolve())}
    import onnxruntime as ort

    from transferkit.data.decode import load_image

    files = sorted((split_data / "val").rglob("*.*"))
    predicted = {r["path"]: {p["label"]: p["probability"] for p in r["predictions"]}
                 for r in tiny_run.predict(files, top_k=3, device="cpu", num_workers=0)}
    x = torch.stack([meta.preprocessing.eval_transform()(load_image(p)) for p in files]).numpy()
    logits, probs = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    assert probs.shape == (len(files), 3) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    for row, path in zip(probs, files):
        expected = predicted[str(path)]
        np.testing.assert_allclose(row, [expected[c] for c in meta.classes], atol=1e-5)
    labels = [meta.classes[i] for i in logits.argmax(1)]
    assert labels == [max(predicted[str(p)], key=predicted[str(p)].get) for p in files]
    assert sum(lab == p.parent.name for lab, p in zip(labels, files)) >= 10  # the run learnt the colours


def test_embedder_of_a_run_is_its_backbone(tiny_run, tmp_path):
    result = tk.export_model(tiny_run, out=tmp_path / "emb.xml", format="openvino", what="embedder", quiet=True)
    assert result.metadata.what == "embedder" and result.metadata.dim == 32 and result.metadata.classes == tiny_run.classes
    x = sample_batch(TINY_PRE, 3)
    out = Session("openvino", result.path).run(x.numpy())
    np.testing.assert_allclose(out, _eager(tiny_run.model.backbone, x), atol=1e-5)


# -- errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"format": "tflite"}, tk.UnknownNameError, r"Unknown export format 'tflite'\. Choose from: onnx, openvino\."),
    ({"what": "head"}, tk.UnknownNameError, r"Unknown export target \(`what`\) 'head'\. Choose from: classifier, embedder\."),
    ({"what": "classifier"}, tk.ConfigError, r"tiny_cnn is a backbone without a classifier head.*`what` embedder"),
    ({"out": "m.xml"}, tk.ConfigError, r"`out` of a onnx export must end in \.onnx; got m\.xml\."),
    ({"format": "openvino", "runtime": "onnxruntime"}, tk.ConfigError, r"ONNX Runtime reads ONNX files, not OpenVINO IR"),
    ({"runtime": "tensorrt"}, tk.UnknownNameError, r"Unknown runtime 'tensorrt'\. Choose from: auto, onnxruntime, openvino\."),
])
def test_export_errors(tmp_path, monkeypatch, kwargs, error, match):
    monkeypatch.chdir(tmp_path)
    kwargs = {"out": "m.xml" if kwargs.get("format") == "openvino" else "m.onnx", **kwargs}
    with pytest.raises(error, match=match):
        tk.export_model("tiny_cnn", quiet=True, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_export_source_errors(tmp_path, tiny_run):
    with pytest.raises(tk.UnknownNameError, match=r"Unknown model 'efficientnet_lit0'\. Did you mean 'efficientnet_lite0'.* "
                                                  r"No run folder efficientnet_lit0 exists either\."):
        tk.export_model("efficientnet_lit0", out=tmp_path / "m.onnx", quiet=True)
    with pytest.raises(tk.RunError, match=r"is not a transferkit run: model\.json is missing"):
        tk.export_model(tmp_path, out=tmp_path / "m.onnx", quiet=True)
    (tmp_path / "note.txt").write_text("x")
    with pytest.raises(tk.ConfigError, match=r"note\.txt is a file\. Pass a run folder or a backbone name"):
        tk.export_model(tmp_path / "note.txt", out=tmp_path / "m.onnx", quiet=True)
    with pytest.raises(tk.ConfigError, match=r"`weights` applies to a backbone name only"):
        tk.export_model(tiny_run.path, out=tmp_path / "m.onnx", weights="none", quiet=True)
    with pytest.raises(tk.ConfigError, match=r"`out` .* is a folder\. Name the file to write"):
        (tmp_path / "dir.onnx").mkdir()
        tk.export_model("tiny_cnn", out=tmp_path / "dir.onnx", quiet=True)
    with pytest.raises(tk.ConfigError, match=r"Cannot export a Linear: pass a run folder, a backbone name"):
        tk.export_model(nn.Linear(2, 2), out=tmp_path / "m.onnx", quiet=True)


def test_missing_onnxruntime_is_a_clear_error(monkeypatch, tmp_path):
    import transferkit.export.runtime as rt

    monkeypatch.setattr(rt, "onnxruntime_available", lambda: False)
    with pytest.raises(tk.MissingDependencyError, match=r"needs the onnxruntime package: pip install 'transferkit\[onnxruntime\]'"):
        tk.export_model("tiny_cnn", out=tmp_path / "m.onnx", runtime="onnxruntime", quiet=True)
    assert rt.check_runtimes("onnx", "auto") == ["openvino"]  # auto checks with what is installed


def test_read_metadata_errors(tmp_path, tiny_onnx):
    with pytest.raises(tk.DataError, match=r"Exported model not found: .*nope\.onnx\. Export one with transferkit export"):
        tk.read_export_metadata(tmp_path / "nope.onnx")
    (tmp_path / "photo.onnx").write_bytes(b"\xff\xd8\xff\xe0 not a model")
    with pytest.raises(tk.ConfigError, match=r"photo\.onnx is not an ONNX model file"):
        tk.read_export_metadata(tmp_path / "photo.onnx")
    plain = onnx.load(str(tiny_onnx[0].path))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(tk.ConfigError, match=r"plain\.onnx has no transferkit metadata .*not written by transferkit export"):
        tk.read_export_metadata(tmp_path / "plain.onnx")
    (tmp_path / "m.xml").write_text("<net/>")
    with pytest.raises(tk.DataError, match=r"m\.bin is missing: an OpenVINO IR is an \.xml file and the \.bin"):
        tk.read_export_metadata(tmp_path / "m.xml")
    with pytest.raises(tk.ConfigError, match=r"m\.tflite is neither an ONNX file \(\.onnx\) nor an OpenVINO IR \(\.xml\)"):
        (tmp_path / "m.tflite").write_bytes(b"x")
        tk.read_export_metadata(tmp_path / "m.tflite")
