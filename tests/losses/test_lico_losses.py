"""nn.Module LICO losses: same numbers as the functional form, temperature state, validation."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from lico_lightning.functional import manifold_matching_loss, sinkhorn_ot_loss
from lico_lightning.losses import ManifoldMatchingLoss, SinkhornOTLoss


def test_mm_module_matches_functional_and_naive_softmax():
    f, g = torch.randn(6, 4, 5), torch.randn(6, 3, 5)
    module = ManifoldMatchingLoss(temperature=0.2, distance="cosine", reduction="none")
    got = module(f, g)
    torch.testing.assert_close(
        got, manifold_matching_loss(f, g, 0.2, distance="cosine", normalize=True, reduction="none")
    )
    # independent check of the default configuration (normalised Euclidean, no diagonal)
    default = ManifoldMatchingLoss()

    def adjacency(x):
        x = x.flatten(1).double()
        x = x / x.norm(dim=1, keepdim=True)
        d = torch.stack([torch.stack([(xi - xj).norm() for xj in x]) for xi in x])
        e = torch.exp(-d / 0.07) * (1 - torch.eye(len(x), dtype=torch.float64))
        return e / e.sum(dim=1, keepdim=True)

    a_f, a_g = adjacency(f), adjacency(g)
    off = ~torch.eye(6, dtype=torch.bool)
    expected = (a_g[off] * (a_g[off] / a_f[off]).log()).sum() / 6
    torch.testing.assert_close(default(f, g).double(), expected, rtol=1e-4, atol=1e-6)


def test_mm_learnable_temperature_gets_gradient_and_is_a_parameter():
    module = ManifoldMatchingLoss(temperature=0.1)
    assert [name for name, _ in module.named_parameters()] == ["log_temperature"]
    module(torch.randn(5, 8), torch.randn(5, 3)).backward()
    assert module.log_temperature.grad is not None
    assert torch.isfinite(module.log_temperature.grad) and module.log_temperature.grad != 0
    torch.testing.assert_close(module.temperature, torch.tensor(0.1))


def test_mm_temperature_stays_in_clamp_range():
    module = ManifoldMatchingLoss(temperature=0.5, min_temperature=0.05, max_temperature=0.8)
    optimizer = torch.optim.SGD(module.parameters(), lr=1e3)
    f, g = torch.randn(8, 6), torch.randn(8, 4)
    for _ in range(5):
        optimizer.zero_grad()
        module(f, g).backward()
        optimizer.step()
        assert 0.05 - 1e-7 <= module.temperature.item() <= 0.8 + 1e-6
    with torch.no_grad():
        module.log_temperature.fill_(math.log(100.0))
    torch.testing.assert_close(module.temperature, torch.tensor(0.8))
    module.log_temperature.grad = None
    module(f, g).backward()
    assert module.log_temperature.grad == 0  # outside the range the loss does not move θ
    with torch.no_grad():
        module.log_temperature.fill_(math.log(1e-6))
    torch.testing.assert_close(module.temperature, torch.tensor(0.05))


def test_mm_fixed_temperature_is_a_buffer_with_the_same_state_key():
    fixed = ManifoldMatchingLoss(temperature=0.3, learn_temperature=False)
    assert list(fixed.parameters()) == []
    assert list(fixed.state_dict()) == ["log_temperature"]
    learned = ManifoldMatchingLoss(temperature=0.07)
    learned.load_state_dict(fixed.state_dict())  # checkpoints load either way
    torch.testing.assert_close(learned.temperature, torch.tensor(0.3))


def test_mm_state_dict_round_trip():
    module = ManifoldMatchingLoss(temperature=0.07)
    with torch.no_grad():
        module.log_temperature.add_(0.3)
    state = module.state_dict()
    restored = ManifoldMatchingLoss(temperature=0.5)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.temperature, module.temperature)
    f, g = torch.randn(4, 6), torch.randn(4, 2)
    torch.testing.assert_close(restored(f, g), module(f, g))
    assert "temperature=" in repr(module) and "distance='euclidean'" in repr(module)


def test_mm_module_follows_dtype_and_autocast():
    module = ManifoldMatchingLoss().double()
    f, g = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    assert module(f, g).dtype == torch.float64
    module = ManifoldMatchingLoss()
    fb = torch.randn(4, 6).bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module(fb, torch.randn(4, 2).bfloat16())
    loss.backward()
    assert torch.isfinite(fb.grad.float()).all()
    assert torch.isfinite(module.log_temperature.grad)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"temperature": 0.0}, ValueError, r"`temperature` in \[0.01, 1.0\]"),
        ({"temperature": 2.0}, ValueError, r"`temperature` in \[0.01, 1.0\]"),
        ({"temperature": float("nan")}, ValueError, "`temperature` to be finite"),
        ({"temperature": "0.1"}, TypeError, "`temperature` to be a float"),
        ({"min_temperature": 0.0}, ValueError, "`min_temperature` > 0"),
        ({"max_temperature": 0.005}, ValueError, "`max_temperature` > `min_temperature`"),
        ({"distance": "l1"}, ValueError, r"\['cosine', 'euclidean'\], but got 'l1'"),
        ({"reduction": "batchmean"}, ValueError, r"\['mean', 'none', 'sum'\]"),
    ],
)
def test_mm_constructor_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        ManifoldMatchingLoss(**kwargs)


def test_mm_module_rejects_single_sample_batch():
    with pytest.raises(ValueError, match="at least B = 2"):
        ManifoldMatchingLoss()(torch.randn(1, 4), torch.randn(1, 3))


def test_ot_module_matches_pot_and_functional():
    x = torch.randn(3, 10, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 4, 6, dtype=torch.float64)
    module = SinkhornOTLoss(epsilon=0.1, max_iter=2000, tol=1e-12)
    loss, plan = module(x, y, return_plan=True)
    torch.testing.assert_close(loss, sinkhorn_ot_loss(x, y, 0.1, max_iter=2000, tol=1e-12))
    refs = []
    for i in range(3):
        xn = x[i].detach().numpy() / np.linalg.norm(x[i].detach().numpy(), axis=1, keepdims=True)
        yn = y[i].numpy() / np.linalg.norm(y[i].numpy(), axis=1, keepdims=True)
        refs.append(
            ot.sinkhorn2(
                np.full(10, 0.1),
                np.full(4, 0.25),
                1 - xn @ yn.T,
                0.1,
                method="sinkhorn_log",
                numItermax=20000,
                stopThr=1e-13,
            )
        )
    assert abs(loss.item() - float(np.mean(refs))) <= 1e-10
    assert plan.shape == (3, 10, 4)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert list(module.parameters()) == [] and module.state_dict() == {}
    assert "epsilon=0.1" in repr(module)


def test_ot_module_reduction_and_weights():
    x, y = torch.randn(2, 5, 3), torch.randn(2, 4, 3)
    w = torch.tensor([1.0, 0.0, 2.0, 1.0])
    per_sample = SinkhornOTLoss(reduction="none")(x, y, text_weights=w)
    assert per_sample.shape == (2,)
    torch.testing.assert_close(
        SinkhornOTLoss(reduction="sum")(x, y, text_weights=w), per_sample.sum()
    )
    _, plan = SinkhornOTLoss()(x, y, text_weights=w, return_plan=True)
    torch.testing.assert_close(plan.sum(1), (w / w.sum()).expand(2, 4), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epsilon": 0.0}, ValueError, "`epsilon` > 0"),
        ({"epsilon": -1.0}, ValueError, "`epsilon` > 0"),
        ({"epsilon": None}, TypeError, "`epsilon` to be a float"),
        ({"max_iter": 0}, ValueError, "`max_iter` >= 1"),
        ({"max_iter": 10.5}, TypeError, "`max_iter` to be an int"),
        ({"tol": -1e-3}, ValueError, "`tol` >= 0"),
        ({"reduction": "avg"}, ValueError, r"\['mean', 'none', 'sum'\], but got 'avg'"),
    ],
)
def test_ot_constructor_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        SinkhornOTLoss(**kwargs)
