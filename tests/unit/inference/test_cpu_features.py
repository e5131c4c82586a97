"""CpuFeatures: a pure parse of /proc/cpuinfo, so both CPU kinds are tested on either."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferkit.inference.cpu import CpuFeatures, cpu_has_bf16

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 avx avx2
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse2 avx avx2 avx512f avx512dq avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""
COOPER_LAKE_LIKE = "model name : Xeon\nflags : avx2 avx512f avx512_bf16\n"
SKYLAKE = "model name : Xeon Gold 6148\nflags : avx2 avx512f avx512bw\n"


@pytest.mark.parametrize("text, want", [
    (ZEN3, CpuFeatures(avx2=True, model_name="AMD EPYC 7B13")),
    (SAPPHIRE_RAPIDS, CpuFeatures(avx2=True, avx512f=True, avx512_bf16=True, amx_bf16=True,
                                  model_name="Intel(R) Xeon(R) Platinum 8481C")),
    (COOPER_LAKE_LIKE, CpuFeatures(avx2=True, avx512f=True, avx512_bf16=True, model_name="Xeon")),
    (SKYLAKE, CpuFeatures(avx2=True, avx512f=True, model_name="Xeon Gold 6148")),
    ("processor : 0\nFeatures : fp asimd bf16\nCPU implementer : 0x41\n", CpuFeatures()),  # ARM: no x86 flags
    ("", CpuFeatures()),
])
def test_cpuinfo_parse(text, want):
    assert CpuFeatures.from_cpuinfo(text) == want


@pytest.mark.parametrize("text, native", [(ZEN3, False), (SKYLAKE, False), (COOPER_LAKE_LIKE, True), (SAPPHIRE_RAPIDS, True)])
def test_native_bf16_needs_avx512_bf16_or_amx(text, native):
    assert CpuFeatures.from_cpuinfo(text).has_native_bf16 is native


def test_from_system_reads_this_machines_cpuinfo():
    path = Path("/proc/cpuinfo")
    if not path.exists():
        assert CpuFeatures.from_system() == CpuFeatures()
        return
    text = path.read_text()
    first = next(line for line in text.splitlines() if line.startswith("flags"))
    flags = set(first.split(":", 1)[1].split())
    got = CpuFeatures.from_system()
    assert got == CpuFeatures.from_cpuinfo(text)
    assert got.avx2 == ("avx2" in flags) and got.amx_bf16 == ("amx_bf16" in flags)
    assert cpu_has_bf16() is got.has_native_bf16 is bool({"avx512_bf16", "amx_bf16"} & flags)
