"""The shared model-safety contexts: every flag comes back, also when the body raises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lico_lightning._safety import (
    explanation_mode,
    module_device,
    preserve_model_state,
    restored_requires_grad,
    restored_training_modes,
)


def mixed_net() -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 3), nn.Dropout(), nn.BatchNorm1d(3)).train()
    net[1].eval()
    net[0].bias.requires_grad_(False)
    return net


def snapshot(net: nn.Module) -> tuple[list[bool], list[bool]]:
    return [m.training for m in net.modules()], [p.requires_grad for p in net.parameters()]


@pytest.mark.parametrize(
    ("context", "restores"),
    [
        (lambda net: restored_training_modes(net), (True, False)),
        (lambda net: restored_requires_grad(net, freeze=True), (False, True)),
        (lambda net: preserve_model_state(net), (True, True)),
        (lambda net: preserve_model_state(net, eval_mode=False), (True, True)),
    ],
)
def test_flags_restored_on_error(context, restores) -> None:
    net = mixed_net()
    before = snapshot(net)
    with pytest.raises(RuntimeError, match="boom"), context(net):
        net.train()  # the body may change anything ...
        for p in net.parameters():
            p.requires_grad_(True)
        raise RuntimeError("boom")
    after = snapshot(net)  # ... and what the context guards is as it was found
    for guarded, was, now in zip(restores, before, after):
        if guarded:
            assert now == was


def test_inside_the_contexts() -> None:
    net = mixed_net()
    with restored_requires_grad(net, freeze=True):
        assert not any(p.requires_grad for p in net.parameters())
    with restored_requires_grad(net):  # freeze=False: the flags stay as mixed_net set them
        assert [p.requires_grad for p in net.parameters()] == [True, False, True, True]
    with restored_training_modes(net, eval_mode=False):
        assert net.training and not net[1].training
    with preserve_model_state(net):
        assert not any(m.training for m in net.modules())


@pytest.mark.parametrize("grad", [False, True])
def test_explanation_mode_leaves_inference_mode(grad: bool) -> None:
    with torch.inference_mode():
        x = torch.ones(2)
        with explanation_mode(grad=grad):
            assert not torch.is_inference_mode_enabled()
            assert torch.is_grad_enabled() is grad
            y = x.clone()
        assert torch.is_inference_mode_enabled()
    assert x.is_inference() and not y.is_inference()


def test_module_device_falls_back_to_buffers_then_default() -> None:
    meta = torch.device("meta")
    assert module_device(nn.Linear(2, 2), meta) == torch.device("cpu")
    only_buffers = nn.Module()
    only_buffers.register_buffer("b", torch.zeros(1, device=meta))
    assert module_device(only_buffers, torch.device("cpu")) == meta
    assert module_device(nn.ReLU(), meta) == meta
