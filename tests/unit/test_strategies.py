"""Strategies: which parameters train, LR groups, BatchNorm in frozen parts, and ``auto``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferkit.backbones import create_backbone
from transferkit.errors import ConfigError, UnknownNameError
from transferkit.strategies import (
    FeatureExtraction,
    FullFineTuning,
    PartialFineTuning,
    choose_auto,
    get_strategy,
    knn_probe_accuracy,
)
from transferkit.training.config import TrainConfig
from transferkit.training.model import TransferModel

_BUILD = {"tiny_cnn": "default", "resnet18": "none", "efficientnet_lite0": "none"}

#: Top-level backbone modules (inside ``backbone.model``) unfrozen by partial with 1 and 2 stages.
_LAST_STAGES = {
    "tiny_cnn": (["stage2"], ["stage1", "stage2"]),
    "resnet18": (["layer4"], ["layer3", "layer4"]),
    "efficientnet_lite0": (["blocks.6", "conv_head", "bn2"], ["blocks.5", "blocks.6", "conv_head", "bn2"]),
}


@pytest.fixture(scope="module", params=list(_BUILD))
def model(request) -> TransferModel:
    torch.manual_seed(0)
    return TransferModel(create_backbone(request.param, weights=_BUILD[request.param]), 3)


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _under(model, prefixes) -> set[str]:
    return {n for n, _ in model.named_parameters() if any(n.startswith(p + ".") for p in prefixes)}


def test_feature_extraction_trains_only_the_head(model):
    FeatureExtraction().on_train_start(model)
    assert _trainable(model) == {"head.weight", "head.bias"}


@pytest.mark.parametrize("num_stages", [1, 2])
def test_partial_unfreezes_exactly_the_last_stages(model, num_stages):
    PartialFineTuning(unfreeze_stages=num_stages).on_train_start(model)
    modules = _LAST_STAGES[model.backbone.name][num_stages - 1]
    expected = _under(model, [f"backbone.model.{m}" for m in modules]) | {"head.weight", "head.bias"}
    assert _trainable(model) == expected
    assert len(expected) > 2


def test_partial_one_stage_names_are_what_the_docs_promise(model):
    PartialFineTuning(unfreeze_stages=1).on_train_start(model)
    backbone_names = {n for n in _trainable(model) if not n.startswith("head.")}
    tops = {n.split(".")[2] if not n.startswith("backbone.model.blocks.") else "blocks." + n.split(".")[3] for n in backbone_names}
    assert tops == {"tiny_cnn": {"stage2"}, "resnet18": {"layer4"},
                    "efficientnet_lite0": {"blocks.6", "conv_head", "bn2"}}[model.backbone.name]


def test_full_trains_everything(model):
    FeatureExtraction().on_train_start(model)  # start frozen so that ``full`` must undo it
    FullFineTuning().on_train_start(model)
    assert _trainable(model) == {n for n, _ in model.named_parameters()}


def test_strategy_switch_refreezes(model):
    FullFineTuning().on_train_start(model)
    FeatureExtraction().on_train_start(model)
    assert _trainable(model) == {"head.weight", "head.bias"}


def test_unfreeze_stages_larger_than_backbone_is_a_config_error(model):
    n = len(model.backbone.stages)
    with pytest.raises(ConfigError, match=rf"`unfreeze_stages` {n + 1} exceeds the backbone's {n} stages"):
        PartialFineTuning(unfreeze_stages=n + 1).on_train_start(model)
    PartialFineTuning(unfreeze_stages=n).on_train_start(model)  # the maximum is allowed
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_unfreeze_stages_must_be_positive_int(bad):
    with pytest.raises(ConfigError, match="`unfreeze_stages` of partial fine-tuning must be an int >= 1"):
        PartialFineTuning(unfreeze_stages=bad)


# -- learning-rate groups --------------------------------------------------------------------------


@pytest.fixture
def tiny_model() -> TransferModel:
    torch.manual_seed(0)
    return TransferModel(create_backbone("tiny_cnn"), 3)


def _group_ids(groups):
    return {g["name"]: ({id(p) for p in g["params"]}, g["lr"]) for g in groups}


def test_lr_group_defaults_are_head_1e3_backbone_1e4():
    cfg = TrainConfig(data="x")
    assert (cfg.head_lr, cfg.backbone_lr) == (1e-3, 1e-4)


def test_lr_groups_feature_extraction_has_only_head(tiny_model):
    s = FeatureExtraction()
    s.on_train_start(tiny_model)
    groups = _group_ids(s.param_groups(tiny_model, head_lr=1e-3, backbone_lr=1e-4))
    assert set(groups) == {"head"}
    assert groups["head"] == ({id(p) for p in tiny_model.head.parameters()}, 1e-3)


@pytest.mark.parametrize("strategy", [PartialFineTuning(unfreeze_stages=1), FullFineTuning()], ids=repr)
def test_lr_groups_pass_values_through(tiny_model, strategy):
    strategy.on_train_start(tiny_model)
    groups = _group_ids(strategy.param_groups(tiny_model, head_lr=0.123, backbone_lr=0.0042))
    assert set(groups) == {"head", "backbone"}
    assert groups["head"] == ({id(p) for p in tiny_model.head.parameters()}, 0.123)
    trainable_backbone = {id(p) for p in tiny_model.backbone.parameters() if p.requires_grad}
    assert groups["backbone"] == (trainable_backbone, 0.0042)
    assert not groups["head"][0] & groups["backbone"][0]


# -- BatchNorm and train mode ----------------------------------------------------------------------


def _bn_stats(model) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, m in model.backbone.named_modules() if isinstance(m, nn.BatchNorm2d)
            for k, v in (("running_mean", m.running_mean), ("running_var", m.running_var))}


def _train_step(model, strategy) -> None:
    strategy.on_train_start(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    strategy.set_train_mode(model)
    x = torch.randn(4, 3, 32, 32) * 2 + 1
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0]))
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_feature_extraction_keeps_backbone_bn_frozen(tiny_model):
    before = _bn_stats(tiny_model)
    weights_before = {n: p.clone() for n, p in tiny_model.backbone.named_parameters()}
    strategy = FeatureExtraction()
    _train_step(tiny_model, strategy)
    assert tiny_model.training and tiny_model.head.training
    assert all(not m.training for m in tiny_model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    after = _bn_stats(tiny_model)
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)
    for n, p in tiny_model.backbone.named_parameters():
        assert torch.equal(p, weights_before[n]), n


def test_partial_updates_bn_only_in_unfrozen_stages(tiny_model):
    before = _bn_stats(tiny_model)
    _train_step(tiny_model, PartialFineTuning(unfreeze_stages=1))
    after = _bn_stats(tiny_model)
    frozen = [k for k in before if not k.startswith("model.stage2.")]
    unfrozen = [k for k in before if k.startswith("model.stage2.")]
    assert frozen and unfrozen
    for k in frozen:
        assert torch.equal(after[k], before[k]), k
    for k in unfrozen:
        assert not torch.equal(after[k], before[k]), k
    modes = {n: m.training for n, m in tiny_model.backbone.model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert modes == {"stem.1": False, "stage1.1": False, "stage2.1": True}


def test_partial_bn_on_resnet18_layer4_only():
    torch.manual_seed(0)
    model = TransferModel(create_backbone("resnet18", weights="none"), 3)
    before = _bn_stats(model)
    _train_step(model, PartialFineTuning(unfreeze_stages=1))
    after = _bn_stats(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if k.startswith("model.layer4.")}


def test_full_puts_every_bn_in_train_mode(tiny_model):
    before = _bn_stats(tiny_model)
    _train_step(tiny_model, FullFineTuning())
    assert all(m.training for m in tiny_model.modules())
    after = _bn_stats(tiny_model)
    assert all(not torch.equal(before[k], after[k]) for k in before)


# -- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, cls", [("feature-extraction", FeatureExtraction), ("feature_extraction", FeatureExtraction),
                                       ("FE", FeatureExtraction), ("linear", FeatureExtraction),
                                       ("partial", PartialFineTuning), ("full", FullFineTuning)])
def test_get_strategy_names_and_aliases(name, cls):
    assert type(get_strategy(name)) is cls


def test_get_strategy_passes_unfreeze_stages():
    s = get_strategy("partial", unfreeze_stages=3)
    assert s.unfreeze_stages == 3
    assert s.state_dict() == {"name": "partial", "unfreeze_stages": 3}


def test_unknown_strategy_lists_close_matches():
    with pytest.raises(UnknownNameError, match=r"Unknown strategy 'parital'\. Did you mean 'partial'\?") as info:
        get_strategy("parital")
    assert "Choose from: auto, feature-extraction, full, gradual, partial." in str(info.value)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


# -- auto ------------------------------------------------------------------------------------------

NEAR = (0.95, 0.5)  # kNN accuracy, chance -> score 0.9
FAR = (0.6, 0.5)  # score 0.2


@pytest.mark.parametrize("num_train, domain, expected", [
    (245, NEAR, "feature-extraction"), (245, FAR, "partial"),
    (5000, NEAR, "partial"), (5000, FAR, "full"),
    (20000, NEAR, "full"), (20000, FAR, "full"),
])
def test_choose_auto_decisions(num_train, domain, expected):
    d = choose_auto(num_train, *domain, probe_samples=120)
    assert d.strategy == expected
    assert d.num_train == num_train and d.probe_samples == 120
    assert d.is_far_domain is (domain is FAR)
    assert d.domain_score == pytest.approx((domain[0] - domain[1]) / (1 - domain[1]))
    assert d.to_dict()["strategy"] == expected


def test_choose_auto_reason_text():
    assert choose_auto(245, 0.95, 0.5).reason == (
        "245 training images (< 1,000); frozen features separate the classes well (kNN 0.95, chance 0.50) -> feature extraction")
    assert choose_auto(5000, 0.6, 0.5).reason == (
        "5,000 training images (1,000-10,000); frozen features separate the classes poorly (kNN 0.60, chance 0.50); "
        "domain looks far from ImageNet, one step more fine-tuning -> full fine-tuning")
    # already at the most fine-tuning: no "one step more" claim
    assert choose_auto(20000, 0.6, 0.5).reason == (
        "20,000 training images (> 10,000); frozen features separate the classes poorly (kNN 0.60, chance 0.50) -> full fine-tuning")


@pytest.mark.parametrize("num_train, expected", [(999, "feature-extraction"), (1000, "partial"), (10000, "partial"),
                                                 (10001, "full")])
def test_choose_auto_size_boundaries(num_train, expected):
    assert choose_auto(num_train, 1.0, 0.5).strategy == expected


def test_choose_auto_with_single_class_sample_counts_as_far():
    d = choose_auto(100, 1.0, 1.0)
    assert d.domain_score == 0.0 and d.is_far_domain and d.strategy == "partial"


def test_knn_probe_accuracy_separable_and_random():
    rng = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 2
    centres = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    feats = centres[labels] + 0.1 * torch.randn(40, 3, generator=rng)
    assert knn_probe_accuracy(feats.numpy(), labels.numpy()) == 1.0
    unrelated = (torch.arange(40) // 2) % 2  # each cluster holds both labels equally
    assert knn_probe_accuracy(feats.numpy(), unrelated.numpy()) <= 0.7


# -- registry --------------------------------------------------------------------------------------


def test_register_and_unregister_a_strategy():
    from transferkit.strategies import Strategy, list_strategies, register_strategy, unregister_strategy

    class HeadAndStem(Strategy):
        name = "head-and-stem"

        def trainable_backbone_stages(self, num_stages):
            return [0]

    register_strategy(HeadAndStem, aliases=("stem",))
    try:
        assert list_strategies() == ["feature-extraction", "partial", "full", "gradual", "head-and-stem"]
        assert type(get_strategy("stem")) is HeadAndStem and type(get_strategy("head_and_stem")) is HeadAndStem
        with pytest.raises(ValueError, match="'head-and-stem' is already registered"):
            register_strategy(HeadAndStem)
        with pytest.raises(UnknownNameError, match=r"Choose from: auto, feature-extraction, full, gradual, head-and-stem, partial\."):
            get_strategy("nope")
    finally:
        unregister_strategy("head-and-stem")
    assert list_strategies() == ["feature-extraction", "partial", "full", "gradual"]
    with pytest.raises(UnknownNameError):
        get_strategy("stem")


def test_auto_is_not_a_registrable_name():
    from transferkit.strategies import Strategy, register_strategy

    class Auto(Strategy):
        name = "auto"

    with pytest.raises(ValueError, match="'auto' is already registered"):
        register_strategy(Auto)
