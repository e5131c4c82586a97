"""Every registered strategy keeps the same promises (parametrised over the registry itself), on tiny_cnn."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from transferkit.backbones import create_backbone
from transferkit.errors import CorruptRunError
from transferkit.strategies import Strategy, get_strategy, list_strategies
from transferkit.training.model import TransferModel

NAMES = list_strategies()


def _model() -> TransferModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TransferModel(create_backbone("tiny_cnn"), 3)


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _groups(strategy: Strategy, model):
    return strategy.param_groups(model, head_lr=0.05, backbone_lr=0.01)


def _walk(strategy: Strategy, model, epochs: int = 3) -> None:
    """Start training and pass ``epochs`` epoch boundaries, as the trainer does."""
    strategy.on_train_start(model)
    opt = torch.optim.SGD([{"params": g["params"], "lr": g["lr"]} for g in _groups(strategy, model)])
    for epoch in range(1, epochs + 1):
        if strategy.on_epoch_start(model, epoch, opt):
            opt = torch.optim.SGD([{"params": g["params"], "lr": g["lr"]} for g in _groups(strategy, model)])


def test_the_builtin_strategies_are_registered():
    assert NAMES[:3] == ["feature-extraction", "partial", "full"]


@pytest.mark.parametrize("name", NAMES)
def test_builds_by_name_and_describes_itself(name):
    s = get_strategy(name)
    assert s.name == name and s.describe()["name"] == name
    assert repr(s).startswith(type(s).__name__ + "(")


@pytest.mark.parametrize("name", NAMES)
def test_freezes_what_it_says(name):
    model, s = _model(), get_strategy(name)
    for p in model.backbone.parameters():  # start half-unfrozen: the hook sets every flag, it does not only add some
        p.requires_grad_(bool(torch.rand((), generator=torch.Generator().manual_seed(p.numel())) < 0.5))
    s.on_train_start(model)
    bb = model.backbone
    stages = set(s.trainable_backbone_stages(len(bb.stages)))
    for i in range(len(bb.stages)):
        flags = {p.requires_grad for m in bb.stage_modules(i) for p in m.parameters()}
        assert flags == {i in stages}, (i, flags)
    assert all(p.requires_grad for p in model.head.parameters())
    if s.is_backbone_frozen:
        assert _trainable(model) == {"head.weight", "head.bias"}


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_cover_exactly_the_trainable_parameters(name):
    model, s = _model(), get_strategy(name)
    s.on_train_start(model)
    groups = _groups(s, model)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert all(g["name"] and g["lr"] in (0.05, 0.01) for g in groups)
    assert [g["lr"] for g in groups if g["name"] == "head"] == [0.05]


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trips_and_restores_behaviour(name):
    model, s = _model(), get_strategy(name, unfreeze_stages=2)
    _walk(s, model)
    state = s.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)  # it is stored in checkpoint.pt, which loads with weights_only=True
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    assert loaded == state

    fresh, other = get_strategy(name), _model()  # default options: the state must carry what differs
    fresh.load_state_dict(loaded)
    assert fresh.state_dict() == state and fresh.describe() == s.describe()
    fresh.on_train_start(other)
    assert _trainable(other) == _trainable(model)
    a, b = _groups(fresh, other), _groups(s, model)
    assert [(g["name"], g["lr"], len(g["params"])) for g in a] == [(g["name"], g["lr"], len(g["params"])) for g in b]


@pytest.mark.parametrize("name", NAMES)
def test_refuses_another_strategys_state(name):
    other = next(n for n in NAMES if n != name)
    with pytest.raises(CorruptRunError, match=rf"state of strategy '{other}', not '{name}'"):
        get_strategy(name).load_state_dict(get_strategy(other).state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_a_few_steps_lower_the_loss(name):
    model, s = _model(), get_strategy(name)
    s.on_train_start(model)
    # tiny_cnn's features are small (|f| ~ 0.02): the head needs a large step to move in a few steps
    groups = s.param_groups(model, head_lr=5.0, backbone_lr=0.05)
    opt = torch.optim.SGD([{"params": g["params"], "lr": g["lr"]} for g in groups], momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(12) % 3
    x = 2.0 * torch.eye(3)[y][:, :, None, None] + 0.3 * torch.randn(12, 3, 32, 32, generator=gen)  # a colour per class
    losses = []
    for _ in range(8):
        s.set_train_mode(model)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        final = float(nn.functional.cross_entropy(model(x), y))
    assert final < 0.9 * losses[0], losses + [final]


@pytest.mark.parametrize("name", NAMES)
def test_set_train_mode_keeps_frozen_batchnorm_in_eval(name):
    model, s = _model(), get_strategy(name)
    s.on_train_start(model)
    model.eval()
    s.set_train_mode(model)
    assert model.head.training
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    for m in bns:
        assert m.training == any(p.requires_grad for p in m.parameters()), m
