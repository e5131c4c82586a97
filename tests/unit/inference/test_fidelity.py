"""The fidelity bar and the remembered bf16 verdicts."""

from __future__ import annotations

import pytest
import torch

from transferkit.inference.cache import ConversionCache
from transferkit.inference.fidelity import (
    MIN_COSINE,
    PrecisionVerdicts,
    Verdict,
    remember_bar,
    verdict_from_record,
    worst_cosine,
    worth_remembering,
)


def test_worst_cosine_is_the_smallest_row():
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    assert worst_cosine(out, ref) == pytest.approx(2 ** -0.5)
    assert worst_cosine(ref.reshape(2, 1, 2), ref) == pytest.approx(1.0)


def test_a_pass_is_remembered_only_with_a_tenth_of_the_allowed_error():
    assert remember_bar(MIN_COSINE) == pytest.approx(0.9999)
    assert worth_remembering(True, 0.99995, 0.999) and not worth_remembering(True, 0.9995, 0.999)
    assert worth_remembering(False, 0.5, 0.999)  # a rejection always


@pytest.mark.parametrize("record, want", [
    ({"bf16": False, "check_min_cosine": 0.9, "min_cosine_bar": 0.999}, Verdict(False, 0.9)),
    ({"bf16": True, "check_min_cosine": 0.99995, "min_cosine_bar": 0.999}, Verdict(True, 0.99995)),
    ({"bf16": True, "check_min_cosine": 0.9995, "min_cosine_bar": 0.999}, None),  # too close to recall
    ({"bf16": False, "check_min_cosine": 0.9, "min_cosine_bar": 0.5}, None),  # another bar
    ({"bf16": "yes", "check_min_cosine": 0.99995, "min_cosine_bar": 0.999}, None),
    ({"bf16": True, "min_cosine_bar": 0.999}, None),
    (None, None),
])
def test_verdict_from_record(record, want):
    assert verdict_from_record(record, 0.999) == want


def test_verdicts_round_trip_per_backend_and_device(tmp_path):
    cache = ConversionCache(tmp_path)
    cpu = PrecisionVerdicts(cache, "k", "torch", "cpu", 0.999)
    gpu = PrecisionVerdicts(cache, "k", "torch", "cuda", 0.999)
    assert cpu.path != gpu.path and gpu.path.name.endswith("-torch-cuda.json") and cpu.path.name == "k-torch.json"
    assert cpu.recall() is None
    cpu.remember(True, 0.9995)  # a close pass: not written
    assert not cpu.path.exists()
    cpu.remember(False, 0.98)
    assert cpu.recall() == Verdict(False, 0.98) and gpu.recall() is None
    assert PrecisionVerdicts(cache, "k", "torch", "cpu", 0.5).recall() is None
    cpu.path.write_text("{not json")
    assert cpu.recall() is None
