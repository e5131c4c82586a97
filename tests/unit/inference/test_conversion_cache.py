"""ConversionCache: the location is passed in; records are optimisations (unreadable = missing)."""

from __future__ import annotations

import json

import torch

from transferkit.config import Settings
from transferkit.inference import cache as cache_mod
from transferkit.inference.cache import ConversionCache, cached_model_info, model_key, module_key


def test_model_key_identifies_its_parts_and_the_recipe(monkeypatch):
    k = model_key("resnet18", "abc", 224)
    assert k == model_key("resnet18", "abc", 224) and len(k) == 32
    assert k != model_key("resnet18", "abc", 225) and k != model_key("resnet18abc", 224)
    monkeypatch.setattr(cache_mod, "CONVERSION_VERSION", cache_mod.CONVERSION_VERSION + 1)
    assert model_key("resnet18", "abc", 224) != k


def test_module_key_follows_the_weights_and_the_input_size():
    torch.manual_seed(0)
    m = torch.nn.Conv2d(3, 4, 3)
    k = module_key(m, 32)
    assert k == module_key(m, 32) and k != module_key(m, 64)
    with torch.no_grad():
        m.weight[0, 0, 0, 0] += 1
    assert module_key(m, 32) != k


def _write_conversion(c: ConversionCache, key: str, record: dict, files=(".xml", ".bin")):
    for suffix in files:
        p = c.model_file(key, suffix)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    c.record_conversion(key, record)


def test_cached_model_info_needs_a_passed_check_and_both_files(tmp_path):
    c = ConversionCache(tmp_path)
    assert c.cached_model_info("a") is None
    _write_conversion(c, "a", {"dim": 32, "conversion_ok": True})
    assert c.cached_model_info("a")["dim"] == 32
    _write_conversion(c, "b", {"dim": 32, "conversion_ok": False})
    _write_conversion(c, "c", {"dim": 0, "conversion_ok": True})
    _write_conversion(c, "d", {"dim": 32, "conversion_ok": True}, files=(".xml",))
    _write_conversion(c, "e", {"conversion_ok": True})
    assert [c.cached_model_info(k) for k in "bcde"] == [None] * 4
    c.model_file("a", ".json").write_text("{broken")
    assert c.cached_model_info("a") is None
    assert c.model_file("a", ".json") == tmp_path / "openvino" / "a-s.json"


def test_the_location_comes_from_settings(tmp_path):
    c = ConversionCache.from_settings(Settings(cache_dir=tmp_path / "x"))
    assert c.root == tmp_path / "x"
    _write_conversion(c, "k", {"dim": 5, "conversion_ok": True})
    assert cached_model_info("k", Settings(cache_dir=tmp_path / "x"))["dim"] == 5
    assert cached_model_info("k", Settings(cache_dir=tmp_path / "y")) is None


def test_size_and_blob_dir(tmp_path):
    c = ConversionCache(tmp_path / "cache")
    assert c.size_bytes() == 0
    c.write_record(c.precision_file("k", "torch"), {"bf16": False})
    record = c.precision_file("k", "torch")
    assert json.loads(record.read_text()) == {"bf16": False} and c.size_bytes() == record.stat().st_size > 0
    assert c.blob_dir() == tmp_path / "cache" / "openvino" / "compiled" and c.blob_dir().is_dir()
    (tmp_path / "file").write_text("")
    assert ConversionCache(tmp_path / "file" / "sub").blob_dir() is None  # cannot be created: no blob cache
