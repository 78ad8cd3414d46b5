"""M2IB math against independent references (torch.distributions, naive loops, sampling)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from lico_lightning.functional.m2ib import (
    bottleneck_capacity,
    gaussian_bottleneck,
    m2ib_objective,
)


@pytest.mark.parametrize("sigma2", [1.0, 0.1, 2.5])
def test_bottleneck_matches_paper_formula_elementwise(sigma2: float) -> None:
    r = torch.randn(2, 3, 5, dtype=torch.float64)
    alpha = 3 * torch.randn(2, 3, 5, dtype=torch.float64)
    eps = torch.randn(2, 3, 5, dtype=torch.float64)
    got = gaussian_bottleneck(r, alpha, eps, sigma2)
    for idx in torch.cartesian_prod(torch.arange(2), torch.arange(3), torch.arange(5)):
        i, j, k = idx.tolist()
        lam = 1.0 / (1.0 + math.exp(-alpha[i, j, k].item()))
        want = lam * r[i, j, k].item() + math.sqrt(sigma2) * (1 - lam) * eps[i, j, k].item()
        assert got[i, j, k].item() == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_bottleneck_distribution_is_eq4() -> None:
    """Z | x ~ N(λ r, σ² (1-λ)²): check the sample mean and variance over many draws."""
    gen = torch.Generator().manual_seed(1)
    r = torch.tensor([1.5, -2.0, 0.3], dtype=torch.float64)
    alpha = torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64)
    sigma2 = 0.5
    eps = torch.randn(200_000, 3, generator=gen, dtype=torch.float64)
    z = gaussian_bottleneck(r, alpha, eps, sigma2)
    lam = torch.sigmoid(alpha)
    torch.testing.assert_close(z.mean(0), lam * r, atol=0.01, rtol=0)
    torch.testing.assert_close(z.var(0), sigma2 * (1 - lam) ** 2, atol=0.005, rtol=0.02)


@pytest.mark.parametrize("sigma2", [1.0, 0.1, 0.01])
def test_capacity_equals_gaussian_kl(sigma2: float) -> None:
    r = 2 * torch.randn(4, 6, dtype=torch.float64)
    alpha = 4 * torch.randn(4, 6, dtype=torch.float64)
    lam = torch.sigmoid(alpha)
    ref = kl_divergence(Normal(lam * r, math.sqrt(sigma2) * (1 - lam)), Normal(0.0, 1.0))
    torch.testing.assert_close(bottleneck_capacity(r, alpha, sigma2), ref)


def test_capacity_zero_for_closed_gate_and_nonnegative() -> None:
    r = torch.randn(100, dtype=torch.float64)
    torch.testing.assert_close(
        bottleneck_capacity(r, torch.full_like(r, -40.0), 1.0), torch.zeros_like(r)
    )
    alpha = torch.linspace(-20, 20, 100, dtype=torch.float64)
    assert bool((bottleneck_capacity(r, alpha, 1.0) >= 0).all())


def test_capacity_finite_for_large_alpha_in_float32() -> None:
    """log(1 - sigmoid(a)) is -inf in float32 for a >~ 17; logsigmoid(-a) is exact."""
    r = torch.tensor([0.5, -1.0])
    alpha = torch.tensor([40.0, 60.0])
    got = bottleneck_capacity(r, alpha, 1.0)
    want = 0.5 * (r**2 - 1.0 + 2.0 * alpha)  # λ = 1, (1-λ)² → 0, -2 log(1-λ) = 2α
    assert bool(torch.isfinite(got).all())
    torch.testing.assert_close(got, want)
    alpha = alpha.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(bottleneck_capacity(r, alpha, 1.0).sum(), [alpha])
    assert bool(torch.isfinite(g).all())


def naive_objective(capacity, embeddings, target, beta, valid) -> torch.Tensor:
    out = []
    for b in range(capacity.shape[0]):
        vals = [
            capacity[b, t, d].item()
            for t in range(capacity.shape[1])
            if valid[b, t]
            for d in range(capacity.shape[2])
        ]
        compression = sum(vals) / len(vals)
        cos = []
        for q in range(embeddings.shape[1]):
            e, y = embeddings[b, q], target[b]
            cos.append((e @ y / (e.norm() * y.norm())).item())
        out.append(beta * compression - sum(cos) / len(cos))
    return torch.tensor(out, dtype=torch.float64)


def test_objective_matches_naive_loop() -> None:
    cap = torch.rand(3, 5, 4, dtype=torch.float64)
    emb = torch.randn(3, 6, 8, dtype=torch.float64)
    target = torch.randn(3, 8, dtype=torch.float64)
    valid = torch.rand(3, 5) > 0.4
    valid[:, 0] = True
    got = m2ib_objective(cap, emb, target, 0.3, valid)
    torch.testing.assert_close(got, naive_objective(cap, emb, target, 0.3, valid))
    all_valid = torch.ones(3, 5, dtype=torch.bool)
    torch.testing.assert_close(
        m2ib_objective(cap, emb, target, 0.3), naive_objective(cap, emb, target, 0.3, all_valid)
    )


def test_objective_pairs_are_independent() -> None:
    """The gradient of the summed loss w.r.t. pair 0's inputs ignores pair 1's."""
    cap = torch.rand(2, 3, 4, dtype=torch.float64, requires_grad=True)
    emb = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 6, dtype=torch.float64)
    g_all = torch.autograd.grad(m2ib_objective(cap, emb, target, 0.1).sum(), [cap, emb])
    g_one = torch.autograd.grad(m2ib_objective(cap[:1], emb[:1], target[:1], 0.1).sum(), [cap, emb])
    torch.testing.assert_close(g_all[0][:1], g_one[0][:1])
    torch.testing.assert_close(g_all[1][:1], g_one[1][:1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": torch.rand(2, 3)}, "capacity"),
        ({"embeddings": torch.rand(3, 2, 4)}, "same batch size"),
        ({"target": torch.rand(2, 5)}, "equal K"),
        ({"valid": torch.ones(2, 4, dtype=torch.bool)}, "valid"),
    ],
)
def test_objective_errors(kwargs, match: str) -> None:
    args = {
        "capacity": torch.rand(2, 3, 4),
        "embeddings": torch.rand(2, 2, 4),
        "target": torch.rand(2, 4),
        "beta": 0.1,
        "valid": None,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        m2ib_objective(**args)
