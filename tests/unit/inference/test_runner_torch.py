"""InferenceRunner on the torch backend: the fidelity guard, remembered verdicts, map_uint8.

Where bf16 matters the CPU's features are passed in (``cpu=``): torch runs bf16 autocast on any
CPU (emulated where it is not native), so these outcomes do not depend on the machine.
"""

from __future__ import annotations

import pytest
import torch
from inference_helpers import AVX2_ONLY, NATIVE_BF16, ref_of, uint8_batches

from transferkit.config import Settings
from transferkit.errors import ConfigError
from transferkit.inference.policy import OPENVINO_MIN_ITEMS
from transferkit.inference.runner import InferenceRunner


def _torch(backbone, cache, **kw):
    kw.setdefault("cpu", NATIVE_BF16)
    return InferenceRunner(backbone, input_size=32, backend="torch", cache=cache, **kw)


def test_impossible_fidelity_bar_falls_back_to_fp32(backbone, x, cache):
    r = _torch(backbone, cache, precision="auto", min_cosine=1.01)
    out = r(x)
    assert r.info["precision"] == r.precision_used == "fp32" and r.info["check_min_cosine"] < 1.01
    torch.testing.assert_close(out, ref_of(backbone, x), atol=1e-5, rtol=1e-5)


def test_explicit_fp32_is_exact_and_skips_the_check(backbone, x, cache):
    r = _torch(backbone, cache, precision="fp32")
    assert r.precision_used is None  # set up on the first batch
    torch.testing.assert_close(r(x), ref_of(backbone, x), atol=1e-5, rtol=1e-5)
    assert r.info["precision"] == "fp32" and "check_min_cosine" not in r.info


@pytest.mark.parametrize("cpu, want", [(NATIVE_BF16, "bf16"), (AVX2_ONLY, "fp32")])
def test_auto_precision_follows_the_cpu_and_meets_the_bar(backbone, x, cache, cpu, want):
    r = _torch(backbone, cache, precision="auto", cpu=cpu)
    out = r(x)
    assert float(torch.nn.functional.cosine_similarity(out, ref_of(backbone, x), dim=1).min()) >= 0.999
    assert r.info["precision"] == want and ("check_min_cosine" in r.info) is (want == "bf16")
    assert r.decision.try_reduced is (want == "bf16")


def test_small_jobs_stay_on_torch_and_the_cache_comes_from_settings(backbone, tmp_path):
    r = InferenceRunner(backbone, input_size=32, expected_items=OPENVINO_MIN_ITEMS - 1, settings=Settings(cache_dir=tmp_path))
    assert r.backend == "torch" and r.cache.root == tmp_path and "do not repay" in r.decision.reason


def test_bad_options_are_config_errors(backbone):
    with pytest.raises(ConfigError, match="`backend` must be one of"):
        InferenceRunner(backbone, input_size=32, backend="tensorrt")
    with pytest.raises(ConfigError, match="`precision` must be one of"):
        InferenceRunner(backbone, input_size=32, precision="int4")
    with pytest.raises(ConfigError, match="CPU only"):
        InferenceRunner(backbone, input_size=32, backend="openvino", device="cuda")


def test_map_uint8_keeps_order_and_matches_the_float_path(backbone, cache):
    import numpy as np

    pre = backbone.preprocessing
    batches = uint8_batches()
    r = _torch(backbone, cache, precision="fp32", preprocessing=pre)
    stream = [(batches[0], "a"), (None, "skip"), (batches[1], "b"), (batches[2], "c")]
    out = list(r.map_uint8(iter(stream)))
    assert [p for _, p in out] == ["a", "skip", "b", "c"] and out[1][0] is None
    for (y, _), b in zip([o for o in out if o[0] is not None], batches):
        ref = ref_of(backbone, pre.normalize_nhwc(b).contiguous())
        assert y.shape == ref.shape
        torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)
    planar = [np.ascontiguousarray(b.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1) for b in batches]
    again = [y for y, _ in r.map_uint8(iter([(b, i) for i, b in enumerate(planar)]))]
    for y, (y0, _) in zip(again, [o for o in out if o[0] is not None]):
        torch.testing.assert_close(y, y0, atol=1e-6, rtol=1e-6)


def test_map_uint8_needs_preprocessing(backbone, cache):
    r = _torch(backbone, cache, precision="fp32")
    with pytest.raises(ValueError, match="preprocessing"):
        list(r.map_uint8(iter([(uint8_batches(1)[0], 0)])))


def test_bf16_rejection_is_remembered_per_weights(backbone, x, cache):
    first = _torch(backbone, cache, precision="auto", min_cosine=1.01)
    first(x)
    assert first.info["precision"] == "fp32" and "check_cached" not in first.info
    assert len(list((cache.root / "precision").glob("*.json"))) == 1
    second = _torch(backbone, cache, precision="auto", min_cosine=1.01)
    second(x)
    assert second.info["precision"] == "fp32" and second.info["check_cached"] is True
    assert second.info["check_min_cosine"] == first.info["check_min_cosine"] and "check_images" not in second.info
    third = _torch(backbone, cache, precision="auto", min_cosine=0.5)  # another bar: checked again
    third(x)
    assert third.info["precision"] == "bf16" and "check_cached" not in third.info


def test_bf16_pass_is_remembered_only_with_a_wide_margin(backbone, x, tmp_path):
    """A pass with a tenth of the allowed error skips later checks; a closer pass is checked again."""
    from transferkit.inference.cache import ConversionCache

    probe = _torch(backbone, ConversionCache(tmp_path / "probe"), precision="auto", min_cosine=0.0)
    probe(x)
    worst = probe.info["check_min_cosine"]
    if worst >= 1.0:
        pytest.skip("bf16 is exact for this model here: no margin to test")
    for margin, remembered in ((20, True), (5, False)):  # allowed error 20x / 5x the observed one
        bar = 1.0 - margin * (1.0 - worst)
        cache = ConversionCache(tmp_path / f"m{margin}")
        runs = []
        for _ in range(2):
            r = _torch(backbone, cache, precision="auto", min_cosine=bar)
            r(x)
            runs.append(r.info)
        assert [i["precision"] for i in runs] == ["bf16", "bf16"]
        assert runs[1].get("check_cached", False) is remembered and ("check_images" in runs[1]) is not remembered
        assert runs[1]["check_min_cosine"] == pytest.approx(worst, abs=1e-6)


def _autocast_spy(monkeypatch) -> list:
    entered = []
    real = torch.autocast

    def spy(*a, **k):
        entered.append(k.get("dtype"))
        return real(*a, **k)

    monkeypatch.setattr(torch, "autocast", spy)
    return entered


def test_bf16_unsafe_model_runs_fp32_without_a_trial(backbone, x, cache, monkeypatch):
    """``bf16_safe=False``: auto never runs bf16 even where the check would pass (bar 0.5), and records no
    verdict; ``precision="bf16"`` still forces it."""
    entered = _autocast_spy(monkeypatch)
    r = _torch(backbone, cache, precision="auto", min_cosine=0.5, bf16_safe=False)
    out = r(x)
    assert r.info["precision"] == "fp32" and "check_min_cosine" not in r.info
    assert r.info["bf16_skipped"] == "known to miss the fidelity bar for this model"
    assert entered == [] and not (cache.root / "precision").exists()
    torch.testing.assert_close(out, ref_of(backbone, x), atol=1e-5, rtol=1e-5)
    safe = _torch(backbone, cache, precision="auto", min_cosine=0.5)
    safe(x)
    assert safe.info["precision"] == "bf16" and torch.bfloat16 in entered
    forced = _torch(backbone, cache, precision="bf16", bf16_safe=False)
    forced(x)
    assert forced.info["precision"] == "bf16"


def test_fp32_means_no_autocast(backbone, x, cache, monkeypatch):
    entered = _autocast_spy(monkeypatch)
    r = _torch(backbone, cache, precision="fp32")
    torch.testing.assert_close(r(x), ref_of(backbone, x), atol=1e-5, rtol=1e-5)
    assert entered == [] and r.info["precision"] == "fp32"
    forced = _torch(backbone, cache, precision="bf16", cpu=AVX2_ONLY)  # forced bf16 runs on any CPU
    forced(x)
    assert entered == [torch.bfloat16] and forced.info["precision"] == "bf16"


@pytest.mark.parametrize("precision, bf16_safe, gpu_bf16, want", [
    ("auto", True, True, torch.bfloat16), ("auto", False, True, torch.float16), ("auto", True, False, torch.float16),
    ("bf16", False, True, torch.bfloat16)])
def test_cuda_amp_dtype_and_verdicts_apart_from_the_cpu(backbone, cache, monkeypatch, precision, bf16_safe, gpu_bf16, want):
    """Decisions only (no GPU needed): CUDA tries AMP and remembers its verdict apart from the CPU's."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_bf16)
    gpu = InferenceRunner(backbone, input_size=32, device="cuda", precision=precision, bf16_safe=bf16_safe, cache=cache,
                          cpu=AVX2_ONLY)
    assert gpu.backend == "torch" and gpu.reduced_dtype() == want and gpu.decision.try_reduced is True
    cpu = _torch(backbone, cache, precision=precision, bf16_safe=bf16_safe)
    assert cpu.reduced_dtype() == torch.bfloat16
    assert gpu.verdicts().path != cpu.verdicts().path and gpu.verdicts().path.name.endswith("-torch-cuda.json")
