"""InferenceRunner: backend choice, the bf16 fidelity guard, the OpenVINO path and its cache."""

from __future__ import annotations

import pytest
import torch

from transferkit.backbones import create_backbone
from transferkit.errors import ConfigError
from transferkit.inference.runner import (
    OPENVINO_MIN_ITEMS,
    OPENVINO_MIN_ITEMS_CACHED,
    OPENVINO_MIN_ITEMS_FP32,
    InferenceRunner,
    openvino_available,
)

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino not installed")


@pytest.fixture
def backbone():
    torch.manual_seed(0)
    return create_backbone("tiny_cnn").eval()


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(8, 3, 32, 32)


def _ref(backbone, x):
    with torch.no_grad():
        return backbone(x)


def test_impossible_fidelity_bar_falls_back_to_fp32(backbone, x):
    r = InferenceRunner(backbone, input_size=32, backend="torch", precision="auto", min_cosine=1.01)
    out = r(x)
    assert r.info["precision"] == "fp32"
    torch.testing.assert_close(out, _ref(backbone, x), atol=1e-5, rtol=1e-5)


def test_explicit_fp32_is_exact_and_skips_the_check(backbone, x):
    r = InferenceRunner(backbone, input_size=32, backend="torch", precision="fp32")
    torch.testing.assert_close(r(x), _ref(backbone, x), atol=1e-5, rtol=1e-5)
    assert r.info["precision"] == "fp32" and "check_min_cosine" not in r.info


def test_auto_precision_output_meets_the_bar(backbone, x):
    r = InferenceRunner(backbone, input_size=32, backend="torch", precision="auto")
    out = r(x)
    cos = torch.nn.functional.cosine_similarity(out, _ref(backbone, x), dim=1)
    assert float(cos.min()) >= 0.999
    assert r.info["precision"] in ("fp32", "bf16")


def test_small_jobs_stay_on_torch(backbone, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    r = InferenceRunner(backbone, input_size=32, expected_items=OPENVINO_MIN_ITEMS - 1)
    assert r.backend == "torch"


@needs_openvino
def test_a_model_that_runs_fp32_on_torch_converts_sooner(backbone, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))  # nothing cached
    assert OPENVINO_MIN_ITEMS_CACHED < OPENVINO_MIN_ITEMS_FP32 < OPENVINO_MIN_ITEMS
    n = OPENVINO_MIN_ITEMS_FP32
    assert InferenceRunner(backbone, input_size=32, expected_items=n, bf16_safe=False).backend == "openvino"
    assert InferenceRunner(backbone, input_size=32, expected_items=n - 1, bf16_safe=False).backend == "torch"
    assert InferenceRunner(backbone, input_size=32, expected_items=n, bf16_safe=True).backend == "torch"
    named = torch.nn.Identity()  # by default the registry answers for the module's name
    named.name = "efficientnet_lite0"
    assert InferenceRunner(named, input_size=224, expected_items=n).backend == "openvino"


@needs_openvino
def test_a_cached_conversion_serves_smaller_jobs(backbone, x, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "warm"))
    InferenceRunner(backbone, input_size=32, backend="openvino", precision="fp32")(x)  # converts, checks, caches
    assert InferenceRunner(backbone, input_size=32, expected_items=OPENVINO_MIN_ITEMS_CACHED).backend == "openvino"
    assert InferenceRunner(backbone, input_size=32, expected_items=OPENVINO_MIN_ITEMS_CACHED - 1).backend == "torch"
    other = create_backbone("tiny_cnn").eval()
    with torch.no_grad():
        next(other.parameters()).add_(0.01)  # other weights: nothing cached for them
    assert InferenceRunner(other, input_size=32, expected_items=OPENVINO_MIN_ITEMS_CACHED).backend == "torch"
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cold"))
    assert InferenceRunner(backbone, input_size=32, expected_items=OPENVINO_MIN_ITEMS - 1).backend == "torch"


def test_bad_options_are_config_errors(backbone):
    with pytest.raises(ConfigError, match="`backend` must be one of"):
        InferenceRunner(backbone, input_size=32, backend="tensorrt")
    with pytest.raises(ConfigError, match="`precision` must be one of"):
        InferenceRunner(backbone, input_size=32, precision="int4")
    with pytest.raises(ConfigError, match="CPU only"):
        InferenceRunner(backbone, input_size=32, backend="openvino", device="cuda")


@needs_openvino
def test_openvino_fp32_matches_torch_and_caches_the_conversion(backbone, x, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    r = InferenceRunner(backbone, input_size=32, backend="openvino", precision="fp32")
    torch.testing.assert_close(r(x), _ref(backbone, x), atol=1e-4, rtol=1e-4)
    assert r.info["backend"] == "openvino"
    cached = list((tmp_path / "openvino").glob("*.xml"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    r2 = InferenceRunner(backbone, input_size=32, backend="openvino", precision="fp32")
    torch.testing.assert_close(r2(x), _ref(backbone, x), atol=1e-4, rtol=1e-4)
    assert cached[0].stat().st_mtime_ns == before  # read from the cache, not converted again
    import sys

    assert sys.modules.get("openvino_telemetry", "absent") in (None, "absent")  # no usage telemetry sent


@needs_openvino
def test_runners_share_one_core_and_each_cache_folder_gets_its_blobs(backbone, x, tmp_path, monkeypatch):
    for sub in ("a", "b"):  # the compiled-blob cache follows $TRANSFERKIT_CACHE per runner, though the Core is shared
        monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / sub))
        r = InferenceRunner(backbone, input_size=32, backend="openvino", precision="fp32")
        r(x)
        assert list((tmp_path / sub / "openvino" / "compiled").glob("*.blob"))
    other = InferenceRunner(backbone, input_size=32, backend="openvino", precision="fp32")
    other(x)
    assert other._ov_model()[0] is r._ov_model()[0]


_SIGNAL_AFTER_TWO_RUNNERS = """
import gc, os, signal, torch
from transferkit.inference.runner import InferenceRunner
from transferkit.backbones import create_backbone
signal.signal(signal.SIGUSR1, lambda *a: print("handled", flush=True))
x = torch.randn(4, 3, 32, 32)
first = InferenceRunner(create_backbone("tiny_cnn"), input_size=32, backend="openvino", precision="fp32")
first(x)
second = InferenceRunner(create_backbone("tiny_cnn"), input_size=32, backend="openvino", precision="fp32")
second(x)
del first; gc.collect()  # oldest first: the order that left a dangling signal stack
del second; gc.collect()
os.kill(os.getpid(), signal.SIGUSR1)
print("alive", flush=True)
"""


@needs_openvino
def test_signals_still_work_after_two_runners_are_freed(tmp_path):
    """Two runners, freed oldest first, then a signal: OpenVINO's per-Core signal stacks made this SIGSEGV
    (exit -11) when each runner had its own Core. Python's handlers (Ctrl-C's too) run on that stack."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRANSFERKIT_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_AFTER_TWO_RUNNERS], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["handled", "alive"]


def _uint8_batches(n_batches=3, size=32, seed=2):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (5 + i, size, size, 3), dtype=np.uint8) for i in range(n_batches)]


@pytest.mark.parametrize("backend", ["torch", pytest.param("openvino", marks=needs_openvino)])
def test_map_uint8_keeps_order_and_matches_the_float_path(backbone, backend):
    pre = backbone.preprocessing
    batches = _uint8_batches()
    r = InferenceRunner(backbone, input_size=32, backend=backend, precision="fp32", preprocessing=pre)
    # a batch of only unreadable images (None) in the middle keeps its place
    stream = [(batches[0], "a"), (None, "skip"), (batches[1], "b"), (batches[2], "c")]
    out = list(r.map_uint8(iter(stream)))
    assert [p for _, p in out] == ["a", "skip", "b", "c"]
    assert out[1][0] is None
    for (y, _), x in zip([o for o in out if o[0] is not None], batches):
        ref = _ref(backbone, pre.normalize_nhwc(x).contiguous())
        assert y.shape == ref.shape
        torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)
    # the same images in planar memory (as the decoders stack them) give the same features
    import numpy as np

    planar = [np.ascontiguousarray(b.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1) for b in batches]
    again = [y for y, _ in r.map_uint8(iter([(b, i) for i, b in enumerate(planar)]))]
    for y, (y0, _) in zip(again, [o for o in out if o[0] is not None]):
        torch.testing.assert_close(y, y0, atol=1e-6, rtol=1e-6)


def test_map_uint8_needs_preprocessing(backbone):
    r = InferenceRunner(backbone, input_size=32, backend="torch", precision="fp32")
    with pytest.raises(ValueError, match="preprocessing"):
        list(r.map_uint8(iter([(_uint8_batches(1)[0], 0)])))


def test_bf16_rejection_is_remembered_per_weights(backbone, x, tmp_path, monkeypatch):
    import transferkit.inference.runner as accel

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(accel, "cpu_has_bf16", lambda: True)
    first = InferenceRunner(backbone, input_size=32, backend="torch", precision="auto", min_cosine=1.01)
    first(x)
    assert first.info["precision"] == "fp32" and "check_cached" not in first.info
    saved = list((tmp_path / "precision").glob("*.json"))
    assert len(saved) == 1
    second = InferenceRunner(backbone, input_size=32, backend="torch", precision="auto", min_cosine=1.01)
    second(x)
    assert second.info["precision"] == "fp32" and second.info["check_cached"] is True
    assert second.info["check_min_cosine"] == first.info["check_min_cosine"]
    # another bar is a different question: checked again, not answered from the record
    third = InferenceRunner(backbone, input_size=32, backend="torch", precision="auto", min_cosine=0.5)
    third(x)
    assert third.info["precision"] == "bf16" and "check_cached" not in third.info


@pytest.mark.parametrize("backend", ["torch", pytest.param("openvino", marks=needs_openvino)])
def test_bf16_unsafe_model_runs_fp32_without_a_trial(backbone, x, tmp_path, monkeypatch, backend):
    """``bf16_safe=False`` (a backbone measured to fail in bf16): auto never compiles or runs bf16, even
    where the check would pass (the bar here is 0.5), and records no verdict; ``precision="bf16"`` still forces it."""
    import transferkit.inference.runner as accel

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(accel, "cpu_has_bf16", lambda: True)
    seen = []
    real_forward, real_compile = InferenceRunner._torch_forward, InferenceRunner._ov_compile

    def forward(self, xx, bf16):
        seen.append(bool(bf16))
        return real_forward(self, xx, bf16)

    def compile_(self, core, model, bf16, **kw):
        seen.append(bool(bf16))
        return real_compile(self, core, model, bf16, **kw)

    monkeypatch.setattr(InferenceRunner, "_torch_forward", forward)
    monkeypatch.setattr(InferenceRunner, "_ov_compile", compile_)
    r = InferenceRunner(backbone, input_size=32, backend=backend, precision="auto", min_cosine=0.5, bf16_safe=False)
    out = r(x)
    assert r.info["precision"] == "fp32" and "check_min_cosine" not in r.info
    assert r.info["bf16_skipped"] == "known to miss the fidelity bar for this model"
    assert seen and not any(seen)
    torch.testing.assert_close(out, _ref(backbone, x), atol=1e-4, rtol=1e-4)
    assert not (tmp_path / "precision").exists()
    # the same weights with bf16_safe (the default) do try bf16, and it passes this bar
    seen.clear()
    r = InferenceRunner(backbone, input_size=32, backend=backend, precision="auto", min_cosine=0.5)
    r(x)
    assert r.info["precision"] == "bf16" and True in seen
    forced = InferenceRunner(backbone, input_size=32, backend=backend, precision="bf16", bf16_safe=False)
    forced(x)
    assert forced.info["precision"] == "bf16"


@pytest.mark.parametrize("precision, bf16_safe, gpu_bf16, want", [
    ("auto", True, True, torch.bfloat16), ("auto", False, True, torch.float16), ("auto", True, False, torch.float16),
    ("bf16", False, True, torch.bfloat16)])
def test_cuda_amp_dtype_and_the_check_decisions(backbone, monkeypatch, precision, bf16_safe, gpu_bf16, want):
    """On CUDA, auto tries AMP (checked like bf16 on the CPU; fp16 for a bf16-unsafe model or a GPU without
    bf16) and remembers its verdict apart from the CPU's. Decisions only: this machine has no GPU."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_bf16)
    gpu = InferenceRunner(backbone, input_size=32, device="cuda", precision=precision, bf16_safe=bf16_safe)
    assert gpu.backend == "torch" and gpu._reduced_dtype() == want
    assert gpu._bf16_worth_trying() is True
    cpu = InferenceRunner(backbone, input_size=32, backend="torch", precision=precision, bf16_safe=bf16_safe)
    assert cpu._reduced_dtype() == torch.bfloat16
    assert gpu._precision_file() != cpu._precision_file() and gpu._precision_file().name.endswith("-torch-cuda.json")


def test_fp32_means_no_autocast(backbone, x, monkeypatch):
    """``precision="fp32"`` runs the forward pass without autocast (on CUDA it used to autocast regardless)."""
    entered = []
    real = torch.autocast

    def spy(*a, **k):
        entered.append(a)
        return real(*a, **k)

    monkeypatch.setattr(torch, "autocast", spy)
    r = InferenceRunner(backbone, input_size=32, backend="torch", precision="fp32")
    torch.testing.assert_close(r(x), _ref(backbone, x), atol=1e-5, rtol=1e-5)
    assert entered == [] and r.info["precision"] == "fp32"
    forced = InferenceRunner(backbone, input_size=32, backend="torch", precision="bf16")
    forced(x)
    assert entered and forced.info["precision"] == "bf16"


@pytest.mark.parametrize("worst, remembered", [(0.99995, True), (0.9995, False)])
def test_bf16_pass_is_remembered_only_with_a_wide_margin(backbone, x, tmp_path, monkeypatch, worst, remembered):
    """A pass at cos >= 0.9999 (a tenth of the 0.999 bar's error) skips later checks; a closer one does not."""
    import transferkit.inference.runner as accel

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(accel, "cpu_has_bf16", lambda: True)
    calls = []

    def fake_passes(self, out, ref):
        calls.append(len(ref))
        self.info["check_min_cosine"] = worst
        return worst >= self.min_cosine

    monkeypatch.setattr(InferenceRunner, "_passes", fake_passes)
    runs = []
    for _ in range(2):
        r = InferenceRunner(backbone, input_size=32, backend="torch", precision="auto", min_cosine=0.999)
        r(x)
        runs.append(r.info)
    assert [i["precision"] for i in runs] == ["bf16", "bf16"]
    assert len(calls) == (1 if remembered else 2)
    assert runs[1].get("check_cached", False) is remembered
    assert runs[1]["check_min_cosine"] == worst


def test_depthwise_training_stays_fp32_on_bf16_cpus(monkeypatch):
    import transferkit.inference.runner as accel
    from transferkit.inference.policy import training_autocast_dtype, trains_depthwise

    monkeypatch.setattr(accel, "cpu_has_bf16", lambda: True)
    cpu = torch.device("cpu")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 8, 3, groups=8), torch.nn.Conv2d(8, 8, 3, groups=8))
    assert trains_depthwise(net) and training_autocast_dtype(cpu, "auto", net) is None
    net[1].weight.requires_grad_(False)  # half of the depthwise layers train: not "most"
    assert not trains_depthwise(net) and training_autocast_dtype(cpu, "auto", net) == torch.bfloat16
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    assert not trains_depthwise(plain) and training_autocast_dtype(cpu, "auto", plain) == torch.bfloat16
    assert training_autocast_dtype(cpu, "bf16", net) == torch.bfloat16
    assert training_autocast_dtype(cpu, "fp32", plain) is None


@needs_openvino
def test_a_conversion_that_differs_from_pytorch_is_not_used(backbone, x, tmp_path, monkeypatch, caplog):
    import transferkit.inference.runner as accel

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(accel, "CONVERSION_MIN_COSINE", 1.01)  # no conversion can pass
    r = InferenceRunner(backbone, input_size=32, backend="openvino", precision="fp32")
    with caplog.at_level("WARNING", logger="transferkit"):
        out = r(x)
    assert r.backend == "torch" and r.info["backend"] == "torch"
    assert 0.9999 <= r.info["conversion_min_cosine"] < 1.01
    assert "differs from PyTorch" in caplog.text
    torch.testing.assert_close(out, _ref(backbone, x), atol=1e-5, rtol=1e-5)
    assert accel.cached_model_info(r._weights_key()) is None  # a builder-only runner will not trust it


@needs_openvino
@pytest.mark.parametrize("conversion_bar, compiles, checked", [
    (0.9999, [True], "bf16"),  # bf16 within the conversion bar of eager fp32: one graph compiled, both checks passed
    (0.999999, [True, False, True], "fp32"),  # bf16 (0.999995 here) within 0.999, not that close: fp32 checked as before
])
def test_first_run_trying_bf16_checks_the_conversion_on_the_bf16_graph(backbone, x, tmp_path, monkeypatch,
                                                                      conversion_bar, compiles, checked):
    """A cold run that tries bf16 compares the bf16 graph with eager fp32 first; within the conversion's
    bar, that passes both checks and the fp32 graph is never compiled (0.8-0.9 s of ResNet-18's cold set-up)."""
    import transferkit.inference.runner as accel

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(accel, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(accel, "CONVERSION_MIN_COSINE", conversion_bar)
    seen, real = [], InferenceRunner._ov_compile

    def compile_(self, core, model, bf16, **kw):
        seen.append(bf16)
        return real(self, core, model, bf16, **kw)

    monkeypatch.setattr(InferenceRunner, "_ov_compile", compile_)
    r = InferenceRunner(backbone, input_size=32, backend="openvino", precision="auto")
    out = r(x)
    assert seen == compiles and r.info["precision"] == "bf16" and r.backend == "openvino"
    record = accel.cached_model_info(r._weights_key())
    assert record["conversion_ok"] is True and record["checked_precision"] == checked
    cos = torch.nn.functional.cosine_similarity(out, _ref(backbone, x), dim=1)
    assert float(cos.min()) >= 0.999 and r.info["check_min_cosine"] >= 0.999


@needs_openvino
def test_warm_bf16_check_runs_without_the_module(backbone, x, tmp_path, monkeypatch):
    import transferkit.inference.runner as accel

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(accel, "cpu_has_bf16", lambda: True)
    key = accel.model_key("test", "tiny")
    cold = InferenceRunner(backbone, input_size=32, backend="openvino", precision="fp32", weights_key=key)
    ref = cold(x)
    assert accel.cached_model_info(key)["dim"] == ref.shape[1]

    def never():
        raise AssertionError("the module was built")

    for bar, expected in ((0.5, "bf16"), (1.01, "fp32")):
        warm = InferenceRunner(never, input_size=32, backend="openvino", precision="auto", weights_key=key, min_cosine=bar)
        out = warm(x)
        assert warm.info["precision"] == expected and warm.info["check_images"] == len(x)
        assert "conversion_min_cosine" not in warm.info  # verified when converted, not again
        cos = torch.nn.functional.cosine_similarity(out, ref, dim=1)
        assert float(cos.min()) >= min(bar, 0.99)


@needs_openvino
def test_conversion_falls_back_to_openvino_convert_model(backbone, x, tmp_path, monkeypatch):
    """The ONNX route is the fast one; a module the exporter rejects goes through openvino.convert_model."""
    import openvino

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    used = []
    real = openvino.convert_model
    monkeypatch.setattr(openvino, "convert_model", lambda *a, **k: used.append("convert_model") or real(*a, **k))
    fast = InferenceRunner(backbone, input_size=32, backend="openvino", precision="fp32")
    torch.testing.assert_close(fast(x), _ref(backbone, x), atol=1e-4, rtol=1e-4)
    assert used == []  # exported through ONNX

    def broken(*a, **k):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", broken)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "other"))
    slow = InferenceRunner(backbone, input_size=32, backend="openvino", precision="fp32")
    torch.testing.assert_close(slow(x), _ref(backbone, x), atol=1e-4, rtol=1e-4)
    assert used == ["convert_model"] and slow.info["conversion_min_cosine"] >= 0.9999


@needs_openvino
@pytest.mark.parametrize("precision, images", [("auto", 40), ("fp32", 8)])
def test_map_uint8_never_writes_into_the_callers_batches(backbone, tmp_path, monkeypatch, precision, images):
    """The set-up runs the compiled graph once on the first images; OpenVINO's ``compiled(x)`` binds
    ``x``'s memory to an internal request, and requests of a queue made later on the same compiled
    graph then copied other images into it: the caller's first batch was overwritten (seen in a
    script that reused the batch)."""
    import numpy as np

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))  # a cold cache: the set-up runs the checks
    rng = np.random.default_rng(5)
    # planar memory, as the decoders stack a batch; more batches than requests. ``auto`` checks bf16 on the
    # first 16 images (40 fill two requests and a part); the fp32 conversion check runs on the first 8
    batches = [np.ascontiguousarray(rng.integers(0, 256, (images, 3, 32, 32), dtype=np.uint8)).transpose(0, 2, 3, 1)
               for _ in range(6)]
    copies = [b.copy() for b in batches]
    r = InferenceRunner(backbone, input_size=32, backend="openvino", precision=precision,
                        preprocessing=backbone.preprocessing)
    out = [y for y, _ in r.map_uint8(iter([(b, i) for i, b in enumerate(batches)]))]
    assert r.info["backend"] == "openvino" and len(out) == 6
    for b, c in zip(batches, copies):
        np.testing.assert_array_equal(b, c)
