"""system_report: the policy's answers for a given CPU, the cache and the extras, as plain values."""

from __future__ import annotations

import json

import torch

import transferkit as tk
from transferkit.config import Settings
from transferkit.doctor import extras, inference_choices, system_report, training_choices
from transferkit.inference.cpu import CpuFeatures

AVX2_ONLY = CpuFeatures(avx2=True, model_name="AMD EPYC 7B13")
AMX = CpuFeatures(avx2=True, avx512f=True, avx512_bf16=True, amx_bf16=True, model_name="Intel Xeon")


def test_report_of_an_avx2_only_cpu(tmp_path):
    (tmp_path / "openvino").mkdir()
    (tmp_path / "openvino" / "m-s.bin").write_bytes(b"x" * 300)
    r = system_report(Settings(cache_dir=tmp_path), cpu=AVX2_ONLY)
    json.dumps(r)  # plain values only
    assert r["cpu"]["model"] == "AMD EPYC 7B13" and r["cpu"]["avx2"] is True and r["cpu"]["native_bf16"] is False
    assert r["cache"] == {"path": str(tmp_path), "exists": True, "size_bytes": 300}
    if r["device"] == "cpu":
        assert all(c["precision"] == "fp32" and "no native bf16" in c["reason"]
                   for k, c in r["inference"].items() if "unsafe" not in k)
        assert r["training"]["fine-tuning"]["autocast"] == "fp32"
    assert tk.system_report is system_report


def test_choices_for_each_cpu_kind():
    amx = inference_choices("cpu", AMX, openvino_available=True)
    assert amx["large folder"]["backend"] == "openvino" and amx["large folder"]["precision"].startswith("bf16 if it passes")
    assert amx["small folder"]["backend"] == "torch" and amx["small folder"]["items"] == 100
    assert amx["large folder, bf16-unsafe model"]["precision"] == "fp32"
    amd = inference_choices("cpu", AVX2_ONLY, openvino_available=True)
    assert amd["large folder"] == {"items": None, "backend": "openvino", "precision": "fp32",
                                   "reason": amd["large folder"]["reason"]} and "no native bf16" in amd["large folder"]["reason"]
    assert inference_choices("cpu", AMX, openvino_available=False)["large folder"]["backend"] == "torch"
    assert inference_choices("cuda", AVX2_ONLY, openvino_available=True)["large folder"]["precision"].startswith("AMP")
    cpu = torch.device("cpu")
    assert training_choices(cpu, AMX) == {
        "fine-tuning": {"autocast": "bf16", "reason": training_choices(cpu, AMX)["fine-tuning"]["reason"]},
        "full fine-tuning, depthwise convolutions": {
            "autocast": "fp32", "reason": "fp32: the model trains most of its depthwise convolutions, slower in bf16"}}
    assert {c["autocast"] for c in training_choices(cpu, AVX2_ONLY).values()} == {"fp32"}


def test_extras_come_from_the_package_metadata():
    from importlib import metadata

    found = extras()
    declared = {r.split("extra ==")[1].strip().strip("'\"") for r in metadata.requires("transferkit") or [] if "extra ==" in r}
    assert set(found) == declared and "umap" in found
    for e in found.values():
        assert e["installed"] is all(v is not None for v in e["packages"].values())
