"""MappingNet (h_psi): shapes, the hand-written MLP, dropout only in training, errors."""

from __future__ import annotations

import pytest
import torch

from lico_lightning.text import MappingNet


@pytest.mark.parametrize(("in_dim", "out_dim"), [(512, 49), (384, 64), (32, 16)])
def test_matches_hand_written_mlp(in_dim: int, out_dim: int) -> None:
    h = MappingNet(in_dim, out_dim, hidden_dim=24).eval()
    x = torch.randn(3, 5, in_dim)
    first, _, _, second = h.net
    ref = torch.relu(x @ first.weight.T + first.bias) @ second.weight.T + second.bias
    out = h(x)
    assert out.shape == (3, 5, out_dim)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_dropout_acts_in_training_only() -> None:
    h = MappingNet(8, 4, hidden_dim=256, dropout=0.5)
    x = torch.randn(2, 3, 8)
    h.train()
    assert not torch.allclose(h(x), h(x))
    h.eval()
    torch.testing.assert_close(h(x), h(x), rtol=0, atol=0)


def test_gradients_reach_parameters_and_inputs() -> None:
    h = MappingNet(8, 4, dropout=0.0)
    x = torch.randn(2, 3, 8, requires_grad=True)
    h(x).sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in h.parameters())


def test_input_dim_mismatch_says_expected_and_got() -> None:
    h = MappingNet(512, 49)
    with pytest.raises(ValueError, match=r"in_dim=512.*\(2, 13, 384\)"):
        h(torch.randn(2, 13, 384))
    with pytest.raises(TypeError, match="floating-point"):
        h(torch.ones(2, 13, 512, dtype=torch.long))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"in_dim": 0, "out_dim": 49}, ValueError, "in_dim"),
        ({"in_dim": 512, "out_dim": -1}, ValueError, "out_dim"),
        ({"in_dim": 512, "out_dim": 49, "hidden_dim": 2.5}, TypeError, "hidden_dim"),
        ({"in_dim": 512, "out_dim": 49, "dropout": 1.0}, ValueError, "dropout"),
        ({"in_dim": 512, "out_dim": 49, "dropout": -0.1}, ValueError, "dropout"),
    ],
)
def test_constructor_errors(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        MappingNet(**kwargs)
