"""Fixtures of the inference tests: a tiny backbone, a batch, a conversion cache in tmp_path."""

from __future__ import annotations

import pytest
import torch

from transferkit.backbones import create_backbone
from transferkit.inference.cache import ConversionCache


@pytest.fixture
def backbone():
    torch.manual_seed(0)
    return create_backbone("tiny_cnn").eval()


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(8, 3, 32, 32)


@pytest.fixture
def cache(tmp_path):
    return ConversionCache(tmp_path / "cache")
