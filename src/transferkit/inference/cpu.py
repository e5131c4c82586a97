"""The CPU's vector features, read once from ``/proc/cpuinfo``: they decide whether bf16 is worth trying."""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuFeatures:
    """What the inference and training policies need to know about the CPU.

    Attributes:
        avx2, avx512f: the vector extensions (AVX2-only CPUs, e.g. AMD Zen 3, have neither of the bf16 ones).
        avx512_bf16, amx_bf16: native bf16 arithmetic (AVX512-BF16, AMX); elsewhere bf16 is emulated and slow,
            and OpenVINO runs a "bf16" graph in fp32.
        model_name: the CPU's marketing name (for reports), "" when unknown.
    """

    avx2: bool = False
    avx512f: bool = False
    avx512_bf16: bool = False
    amx_bf16: bool = False
    model_name: str = ""

    @property
    def has_native_bf16(self) -> bool:
        """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX)."""
        return self.avx512_bf16 or self.amx_bf16

    @classmethod
    def from_cpuinfo(cls, text: str) -> CpuFeatures:
        """Parse the text of ``/proc/cpuinfo`` (the first processor's ``flags`` and ``model name``)."""
        flags: set[str] = set()
        model = ""
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                continue
            key = key.strip()
            if key == "flags" and not flags:
                flags = set(value.split())
            elif key == "model name" and not model:
                model = value.strip()
        return cls(avx2="avx2" in flags, avx512f="avx512f" in flags, avx512_bf16="avx512_bf16" in flags,
                   amx_bf16="amx_bf16" in flags, model_name=model)

    @classmethod
    def from_system(cls) -> CpuFeatures:
        """This machine's features (read once per process; no features where ``/proc/cpuinfo`` is missing)."""
        return _system_features()


@functools.lru_cache(maxsize=1)
def _system_features() -> CpuFeatures:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return CpuFeatures()
    return CpuFeatures.from_cpuinfo(text)


def cpu_has_bf16() -> bool:
    """Whether this machine's CPU computes bf16 natively (see :attr:`CpuFeatures.has_native_bf16`)."""
    return CpuFeatures.from_system().has_native_bf16
