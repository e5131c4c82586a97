"""The fidelity bar for reduced precision and for conversions, and the remembered bf16 verdicts.

``precision="auto"`` keeps bf16 only if, on the first batch, every output keeps cosine similarity
>= ``min_cosine`` (0.999) to fp32. The verdict is remembered per weights: a rejection always (a
model bf16 distorts is not retried and recompiled on every run), a pass only when every checked
image kept a tenth of the allowed error (cos >= 0.9999 for the 0.999 bar), so a pass closer to
the bar is checked again on the next data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .cache import ConversionCache

#: Fidelity bar for reduced precision: every output's cosine similarity to fp32.
MIN_COSINE = 0.999
#: Images of the first batch the precision check runs.
CHECK_IMAGES = 16
#: A bf16 pass is remembered only when the check's worst error (1 - cosine) was this many times below the allowed one.
BF16_PASS_MARGIN = 10
#: A conversion is used only if its fp32 outputs keep this cosine similarity to eager PyTorch.
CONVERSION_MIN_COSINE = 0.9999
#: Images that eager PyTorch runs to check a new conversion (a wrong graph shows on any image).
CONVERSION_CHECK_IMAGES = 8


def worst_cosine(out: torch.Tensor, ref: torch.Tensor) -> float:
    """The smallest cosine similarity between matching rows of ``out`` and ``ref`` (flattened per row)."""
    n = len(ref)
    return float(torch.nn.functional.cosine_similarity(out.float().reshape(n, -1), ref.float().reshape(n, -1), dim=1).min())


def remember_bar(min_cosine: float) -> float:
    """The cosine a bf16 pass must reach to be remembered (a tenth of the bar's allowed error)."""
    return 1.0 - (1.0 - min_cosine) / BF16_PASS_MARGIN


def worth_remembering(bf16: bool, worst: float, min_cosine: float) -> bool:
    """A rejection is always remembered; a pass only with :data:`BF16_PASS_MARGIN`'s margin."""
    return not bf16 or worst >= remember_bar(min_cosine)


def verdict_from_record(record: dict[str, Any] | None, min_cosine: float) -> Verdict | None:
    """The remembered verdict for this bar, or None (no record, another bar, or a pass too close to recall)."""
    try:
        if record is None or record.get("min_cosine_bar") != min_cosine:
            return None
        worst = float(record["check_min_cosine"])
        bf16 = record.get("bf16")
        if bf16 is False or (bf16 is True and worst >= remember_bar(min_cosine)):
            return Verdict(bool(bf16), worst)
    except (KeyError, TypeError, ValueError):
        pass
    return None


@dataclass(frozen=True)
class Verdict:
    """A bf16 check's outcome: whether bf16 passed, and the check's worst cosine."""

    bf16: bool
    min_cosine: float


class PrecisionVerdicts:
    """The bf16 verdicts of one model on one backend and device, in a :class:`ConversionCache`."""

    def __init__(self, cache: ConversionCache, key: str, backend: str, device_type: str, min_cosine: float):
        self.path = cache.precision_file(key, backend, device_type)
        self.cache = cache
        self.min_cosine = float(min_cosine)

    def recall(self) -> Verdict | None:
        return verdict_from_record(self.cache.read_record(self.path), self.min_cosine)

    def remember(self, bf16: bool, worst: float) -> None:
        if worth_remembering(bf16, worst, self.min_cosine):
            self.cache.write_record(self.path, {"bf16": bf16, "check_min_cosine": worst, "min_cosine_bar": self.min_cosine})
