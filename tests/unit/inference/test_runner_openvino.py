"""InferenceRunner on OpenVINO: conversion and its cache, the checks, the precision it really runs, map_uint8.

A test that needs OpenVINO to run bf16 is skipped on a CPU without native bf16; the AVX2-only case
(OpenVINO compiles a "bf16" request in f32) is faked whole: the policy is told the CPU has bf16 and
every compile returns the f32 graph OpenVINO builds on such a CPU.
"""

from __future__ import annotations

import pytest
import torch
from inference_helpers import NATIVE_BF16, needs_native_bf16, needs_openvino, ref_of, uint8_batches

from transferkit.backbones import create_backbone
from transferkit.inference import fidelity
from transferkit.inference import openvino_backend as ovb
from transferkit.inference.cache import ConversionCache, model_key
from transferkit.inference.policy import OPENVINO_MIN_ITEMS, OPENVINO_MIN_ITEMS_CACHED, OPENVINO_MIN_ITEMS_FP32
from transferkit.inference.runner import InferenceRunner

pytestmark = needs_openvino


def _ov(module, cache, **kw):
    kw.setdefault("cpu", NATIVE_BF16)
    kw.setdefault("backend", "openvino")
    return InferenceRunner(module, input_size=32, cache=cache, **kw)


@pytest.fixture
def compiles(monkeypatch) -> list[bool]:
    """The ``bf16`` argument of every compile, in order."""
    seen, real = [], ovb.compile_model

    def spy(model, bf16, **kw):
        seen.append(bf16)
        return real(model, bf16, **kw)

    monkeypatch.setattr(ovb, "compile_model", spy)
    return seen


def test_a_model_that_runs_fp32_on_torch_converts_sooner(backbone, cache):
    n = OPENVINO_MIN_ITEMS_FP32
    auto = dict(backend="auto")
    assert _ov(backbone, cache, expected_items=n, bf16_safe=False, **auto).backend == "openvino"
    assert _ov(backbone, cache, expected_items=n - 1, bf16_safe=False, **auto).backend == "torch"
    assert _ov(backbone, cache, expected_items=n, bf16_safe=True, **auto).backend == "torch"
    named = torch.nn.Identity()  # by default the registry answers for the module's name
    named.name = "efficientnet_lite0"
    assert InferenceRunner(named, input_size=224, expected_items=n, cache=cache).backend == "openvino"


def test_a_cached_conversion_serves_smaller_jobs(backbone, x, tmp_path):
    warm = ConversionCache(tmp_path / "warm")
    _ov(backbone, warm, precision="fp32")(x)  # converts, checks, caches
    auto = dict(backend="auto")
    assert _ov(backbone, warm, expected_items=OPENVINO_MIN_ITEMS_CACHED, **auto).backend == "openvino"
    assert _ov(backbone, warm, expected_items=OPENVINO_MIN_ITEMS_CACHED - 1, **auto).backend == "torch"
    other = create_backbone("tiny_cnn").eval()
    with torch.no_grad():
        next(other.parameters()).add_(0.01)  # other weights: nothing cached for them
    assert _ov(other, warm, expected_items=OPENVINO_MIN_ITEMS_CACHED, **auto).backend == "torch"
    cold = ConversionCache(tmp_path / "cold")
    assert _ov(backbone, cold, expected_items=OPENVINO_MIN_ITEMS - 1, **auto).backend == "torch"


def test_openvino_fp32_matches_torch_and_caches_the_conversion(backbone, x, cache):
    import sys

    r = _ov(backbone, cache, precision="fp32")
    torch.testing.assert_close(r(x), ref_of(backbone, x), atol=1e-4, rtol=1e-4)
    assert r.info["backend"] == "openvino" and r.info["precision"] == "fp32"
    cached = list((cache.root / "openvino").glob("*.xml"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    r2 = _ov(backbone, cache, precision="fp32")
    torch.testing.assert_close(r2(x), ref_of(backbone, x), atol=1e-4, rtol=1e-4)
    assert cached[0].stat().st_mtime_ns == before  # read from the cache, not converted again
    assert "conversion_min_cosine" not in r2.info  # verified when converted, not again
    assert sys.modules.get("openvino_telemetry", "absent") in (None, "absent")  # no usage telemetry sent


def test_each_cache_gets_its_blobs_though_the_core_is_shared(backbone, x, tmp_path):
    for sub in ("a", "b"):
        _ov(backbone, ConversionCache(tmp_path / sub), precision="fp32")(x)
        assert list((tmp_path / sub / "openvino" / "compiled").glob("*.blob"))
    assert ovb.openvino_core() is ovb.openvino_core()


_SIGNAL_AFTER_TWO_RUNNERS = """
import gc, os, signal, sys, torch
from transferkit.inference.cache import ConversionCache
from transferkit.inference.runner import InferenceRunner
from transferkit.backbones import create_backbone
signal.signal(signal.SIGUSR1, lambda *a: print("handled", flush=True))
x = torch.randn(4, 3, 32, 32)
cache = ConversionCache(sys.argv[1])
first = InferenceRunner(create_backbone("tiny_cnn"), input_size=32, backend="openvino", precision="fp32", cache=cache)
first(x)
second = InferenceRunner(create_backbone("tiny_cnn"), input_size=32, backend="openvino", precision="fp32", cache=cache)
second(x)
del first; gc.collect()  # oldest first: the order that left a dangling signal stack
del second; gc.collect()
os.kill(os.getpid(), signal.SIGUSR1)
print("alive", flush=True)
"""


def test_signals_still_work_after_two_runners_are_freed(tmp_path):
    """With one Core per runner, two runners freed oldest first and then a signal crashed with SIGSEGV."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _SIGNAL_AFTER_TWO_RUNNERS, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["handled", "alive"]


def test_map_uint8_keeps_order_and_matches_the_float_path(backbone, cache):
    pre = backbone.preprocessing
    batches = uint8_batches()
    r = _ov(backbone, cache, precision="fp32", preprocessing=pre)
    out = list(r.map_uint8(iter([(batches[0], "a"), (None, "skip"), (batches[1], "b"), (batches[2], "c")])))
    assert [p for _, p in out] == ["a", "skip", "b", "c"] and out[1][0] is None
    for (y, _), b in zip([o for o in out if o[0] is not None], batches):
        torch.testing.assert_close(y, ref_of(backbone, pre.normalize_nhwc(b).contiguous()), atol=1e-4, rtol=1e-4)
    assert r.info["backend"] == "openvino"


def test_bf16_unsafe_model_compiles_no_bf16_graph(backbone, x, cache, compiles):
    r = _ov(backbone, cache, precision="auto", min_cosine=0.5, bf16_safe=False)
    out = r(x)
    assert r.info["precision"] == "fp32" and "check_min_cosine" not in r.info
    assert r.info["bf16_skipped"] == "known to miss the fidelity bar for this model"
    assert compiles == [False] and not (cache.root / "precision").exists()
    torch.testing.assert_close(out, ref_of(backbone, x), atol=1e-4, rtol=1e-4)


@needs_native_bf16
def test_bf16_safe_model_tries_bf16_and_forced_bf16_runs_it(backbone, x, cache, compiles):
    r = _ov(backbone, cache, precision="auto", min_cosine=0.5)
    r(x)
    assert r.info["precision"] == "bf16" and True in compiles
    forced = _ov(backbone, cache, precision="bf16", bf16_safe=False)
    forced(x)
    assert forced.info["precision"] == "bf16"


def test_a_conversion_that_differs_from_pytorch_is_not_used(backbone, x, cache, monkeypatch, caplog):
    monkeypatch.setattr(fidelity, "CONVERSION_MIN_COSINE", 1.01)  # no conversion can pass
    r = _ov(backbone, cache, precision="fp32")
    with caplog.at_level("WARNING", logger="transferkit"):
        out = r(x)
    assert r.backend == "torch" and r.info["backend"] == "torch"
    assert 0.9999 <= r.info["conversion_min_cosine"] < 1.01
    assert "differs from PyTorch" in caplog.text
    torch.testing.assert_close(out, ref_of(backbone, x), atol=1e-5, rtol=1e-5)
    assert cache.cached_model_info(r.weights_key) is None  # a builder-only runner will not trust it


@needs_native_bf16
@pytest.mark.parametrize("conversion_bar, expected_compiles, checked", [
    (0.9999, [True], "bf16"),  # bf16 within the conversion bar of eager fp32: one graph, both checks passed
    (0.999999, [True, False], "fp32"),  # bf16 within 0.999 but not that close: the fp32 graph is checked too
])
def test_first_run_trying_bf16_checks_the_conversion_on_the_bf16_graph(backbone, x, cache, monkeypatch, compiles,
                                                                      conversion_bar, expected_compiles, checked):
    monkeypatch.setattr(fidelity, "CONVERSION_MIN_COSINE", conversion_bar)
    r = _ov(backbone, cache, precision="auto")
    out = r(x)
    assert compiles == expected_compiles and r.info["precision"] == "bf16" and r.backend == "openvino"
    record = cache.cached_model_info(r.weights_key)
    assert record["conversion_ok"] is True and record["checked_precision"] == checked
    cos = torch.nn.functional.cosine_similarity(out, ref_of(backbone, x), dim=1)
    assert float(cos.min()) >= 0.999 and r.info["check_min_cosine"] >= 0.999


@pytest.fixture
def no_native_bf16_plugin(monkeypatch) -> list[bool]:
    """OpenVINO as on an AVX2-only CPU: a bf16 request compiles the f32 graph (its precision hint reads f32)."""
    asked, real = [], ovb.compile_model

    def compile_f32(model, bf16, **kw):
        asked.append(bf16)
        return real(model, False, **kw)

    monkeypatch.setattr(ovb, "compile_model", compile_f32)
    return asked


@pytest.mark.parametrize("path", ["float", "uint8"])
def test_a_bf16_request_that_runs_fp32_is_recorded_as_fp32(backbone, x, cache, no_native_bf16_plugin, path):
    """The AMD EPYC case: the policy tries bf16 (told the CPU has it) but OpenVINO runs the graph in f32.
    The runner reads the compiled precision: fp32, one compile, the conversion checked as fp32, no bf16 verdict."""
    pre = backbone.preprocessing
    r = _ov(backbone, cache, precision="auto", preprocessing=pre)
    if path == "float":
        out, ref = r(x), ref_of(backbone, x)
    else:
        batch = uint8_batches(1, seed=4)[0]
        out, ref = next(iter(r.map_uint8(iter([(batch, 0)]))))[0], ref_of(backbone, pre.normalize_nhwc(batch).contiguous())
    assert no_native_bf16_plugin == [True]
    assert r.info["precision"] == r.precision_used == "fp32" and r.backend == "openvino"
    assert r.info["bf16_unavailable"] and "check_min_cosine" not in r.info and "check_images" not in r.info
    assert cache.cached_model_info(r.weights_key)["checked_precision"] == "fp32"
    assert not (cache.root / "precision").exists()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    again = _ov(backbone, cache, precision="auto", preprocessing=pre)  # warm: no conversion check, still fp32
    again(x)
    assert again.info["precision"] == "fp32" and no_native_bf16_plugin == [True, True]


def test_compiled_precision_reads_what_the_plugin_runs(backbone):
    from transferkit.inference.cpu import CpuFeatures

    model = ovb.convert(backbone, 32)
    assert ovb.compiled_precision(ovb.compile_model(model, False)) == "fp32"
    bf16 = ovb.compiled_precision(ovb.compile_model(model, True))
    assert bf16 == ("bf16" if ovb.cpu_runs_bf16() else "fp32")
    if CpuFeatures.from_system().has_native_bf16:
        assert bf16 == "bf16"


@needs_native_bf16
def test_warm_bf16_check_runs_without_the_module(backbone, x, cache):
    key = model_key("test", "tiny")
    ref = _ov(backbone, cache, precision="fp32", weights_key=key)(x)
    assert cache.cached_model_info(key)["dim"] == ref.shape[1]

    def never():
        raise AssertionError("the module was built")

    for bar, expected in ((0.5, "bf16"), (1.01, "fp32")):
        warm = _ov(never, cache, precision="auto", weights_key=key, min_cosine=bar)
        out = warm(x)
        assert warm.info["precision"] == expected and warm.info["check_images"] == len(x)
        assert "conversion_min_cosine" not in warm.info
        cos = torch.nn.functional.cosine_similarity(out, ref, dim=1)
        assert float(cos.min()) >= min(bar, 0.99)


def test_conversion_falls_back_to_openvino_convert_model(backbone, x, tmp_path, monkeypatch):
    """The ONNX route is the fast one; a module the exporter rejects goes through openvino.convert_model."""
    import openvino

    used = []
    real = openvino.convert_model
    monkeypatch.setattr(openvino, "convert_model", lambda *a, **k: used.append("convert_model") or real(*a, **k))
    fast = _ov(backbone, ConversionCache(tmp_path / "a"), precision="fp32")
    torch.testing.assert_close(fast(x), ref_of(backbone, x), atol=1e-4, rtol=1e-4)
    assert used == []

    def broken(*a, **k):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", broken)
    slow = _ov(backbone, ConversionCache(tmp_path / "b"), precision="fp32")
    torch.testing.assert_close(slow(x), ref_of(backbone, x), atol=1e-4, rtol=1e-4)
    assert used == ["convert_model"] and slow.info["conversion_min_cosine"] >= 0.9999


@pytest.mark.parametrize("precision, images", [("auto", 40), ("fp32", 8)])
def test_map_uint8_never_writes_into_the_callers_batches(backbone, cache, precision, images):
    """The set-up runs the compiled graph on the first images; OpenVINO's ``compiled(x)`` bound ``x``'s
    memory to a request that a queue made later on the same graph then overwrote with other images."""
    import numpy as np

    rng = np.random.default_rng(5)
    batches = [np.ascontiguousarray(rng.integers(0, 256, (images, 3, 32, 32), dtype=np.uint8)).transpose(0, 2, 3, 1)
               for _ in range(6)]
    copies = [b.copy() for b in batches]
    r = _ov(backbone, cache, precision=precision, preprocessing=backbone.preprocessing, cpu=None)
    out = [y for y, _ in r.map_uint8(iter([(b, i) for i, b in enumerate(batches)]))]
    assert r.info["backend"] == "openvino" and len(out) == 6
    for b, c in zip(batches, copies):
        np.testing.assert_array_equal(b, c)
