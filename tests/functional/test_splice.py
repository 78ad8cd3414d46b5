"""SpLiCE baseline: the solution satisfies the non-negative Lasso's optimality (KKT) conditions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lico_lightning.functional import (
    splice_decompose,
    splice_penalty_for_sparsity,
    splice_reconstruct,
)


def test_weights_satisfy_the_kkt_conditions_of_the_paper_objective() -> None:
    g = torch.Generator().manual_seed(0)
    img, con = torch.randn(5, 12, generator=g), torch.randn(30, 12, generator=g)
    mean = F.normalize(torch.randn(40, 12, generator=g), dim=-1).mean(0)
    lam = 0.05
    w = splice_decompose(img, con, mean, l1_penalty=lam, tol=1e-9, max_iter=100000).double()
    # reference built here: normalise, centre, re-normalise (concepts on their own mean)
    c = F.normalize(con.double(), dim=-1)
    c = F.normalize(c - c.mean(0), dim=-1)
    z = F.normalize(F.normalize(img.double(), dim=-1) - mean.double(), dim=-1)
    # ∂/∂w of ‖Cᵀw − z‖² + 2λ‖w‖₁ is 2·grad + 2λ; optimality for w ≥ 0:
    grad = (w @ c - z) @ c.T  # (B, C)
    active = w > 0
    assert bool(active.any()) and bool((~active).any())
    torch.testing.assert_close(grad[active], torch.full_like(grad[active], -lam), atol=1e-5, rtol=0)
    assert bool((grad[~active] >= -lam - 1e-5).all())
    assert bool((w >= 0).all())
    recon = splice_reconstruct(w.float(), con, mean)
    torch.testing.assert_close(recon.double(), w @ c + mean.double(), atol=1e-6, rtol=1e-6)


def test_larger_penalty_is_sparser_and_the_sparsity_search_hits_its_target() -> None:
    g = torch.Generator().manual_seed(1)
    img, con = torch.randn(6, 16, generator=g), torch.randn(50, 16, generator=g)
    nnz = [
        (splice_decompose(img, con, l1_penalty=lam) > 0).sum().item() for lam in (0.01, 0.1, 0.4)
    ]
    assert nnz[0] > nnz[1] > nnz[2]
    lam = splice_penalty_for_sparsity(img, con, target_nonzeros=5)
    mean_nnz = (splice_decompose(img, con, l1_penalty=lam) > 0).sum(1).float().mean().item()
    assert 4 <= mean_nnz <= 6


def test_bad_inputs() -> None:
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="width 4"):
        splice_decompose(x, torch.randn(3, 5))
    with pytest.raises(ValueError, match="finite"):
        splice_decompose(torch.tensor([[float("nan")] * 4]), torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"`image_mean` of shape \(4,\)"):
        splice_decompose(x, torch.randn(3, 4), torch.zeros(3))
    with pytest.raises(ValueError, match=">= 0"):
        splice_decompose(x, torch.randn(3, 4), l1_penalty=-1.0)
    with pytest.raises(ValueError, match="3 columns"):
        splice_reconstruct(torch.rand(2, 2), torch.randn(3, 4))
