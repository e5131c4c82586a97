"""CLI: transferkit doctor reports this machine's real values, in text and as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from transferkit.cli import main


def _cpuinfo_flags() -> set[str] | None:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return None
    line = next((ln for ln in path.read_text().splitlines() if ln.startswith("flags")), None)
    return set(line.split(":", 1)[1].split()) if line else None


def test_doctor_json_reports_the_machine(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    assert main(["doctor", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    flags = _cpuinfo_flags()
    if flags is not None:
        assert r["cpu"]["avx2"] is ("avx2" in flags) and r["cpu"]["avx512f"] is ("avx512f" in flags)
        assert r["cpu"]["native_bf16"] is bool({"avx512_bf16", "amx_bf16"} & flags)
    assert r["cpu"]["cores"] == os.cpu_count()
    assert r["cache"] == {"path": str(tmp_path / "cache"), "exists": False, "size_bytes": 0}
    import torch

    assert str(torch.__version__).split("+")[0] == r["packages"]["torch"].split("+")[0]
    assert r["cuda"]["available"] is torch.cuda.is_available()
    large, small = r["inference"]["large folder"], r["inference"]["small folder"]
    assert small["backend"] == "torch" and large["backend"] in ("openvino", "torch") and large["reason"]
    bf16_tried = large["precision"].startswith(("bf16", "AMP"))
    assert bf16_tried is (r["device"] == "cuda" or r["cpu"]["native_bf16"])
    assert r["inference"]["large folder, bf16-unsafe model"]["precision"] in ("fp32", "AMP (bf16 or fp16) if it passes "
                                                                                       "the fidelity check, else fp32")
    assert "umap" in r["extras"] and set(r["extras"]["umap"]["packages"]) == {"umap-learn"}


def test_doctor_text_names_the_features_and_the_choices(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    flags = _cpuinfo_flags()
    lines = {ln.split()[0]: ln.split()[-1] for ln in out.splitlines() if ln.strip().startswith(("AVX2 ", "AMX-BF16 "))}
    if flags is not None:
        assert lines == {"AVX2": "yes" if "avx2" in flags else "no", "AMX-BF16": "yes" if "amx_bf16" in flags else "no"}
    for heading in ("CPU", "Embedding (backend=auto, precision=auto)", "Fine-tuning (precision=auto)", "Cache", "Packages",
                    "Optional extras"):
        assert heading in out.splitlines()
    assert str(tmp_path / "cache") in out and "not created yet" in out
    assert "why: " in out and "openvino " in out


@pytest.mark.parametrize("argv", [["doctor", "--help"]])
def test_doctor_help(capsys, argv):
    assert main(argv) == 0
    assert "--json" in capsys.readouterr().out
