"""Public views that share one formula agree where both apply (and with a reference)."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from lico_lightning.functional import (
    p_faithfulness_correlation,
    rank_data,
    spearman_rank_correlation,
)


# ------------------------------------------------------------------ Spearman
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_both_spearman_views_agree_with_scipy(dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(5, 60, generator=gen).round(decimals=1).to(dtype)  # ties
    b = (a + torch.randn(5, 60, generator=gen)).to(dtype)
    sanity = spearman_rank_correlation(a, b)  # maps (B, *) → (B,)
    faith = p_faithfulness_correlation(a, b)  # (..., m) → (...)
    assert sanity.dtype == faith.dtype == dtype
    torch.testing.assert_close(sanity, faith, rtol=0, atol=0)
    for i in range(5):
        want = stats.spearmanr(a[i].numpy(), b[i].numpy()).statistic
        assert float(faith[i]) == pytest.approx(want, abs=1e-6)
        torch.testing.assert_close(
            rank_data(a[i]), torch.from_numpy(stats.rankdata(a[i].numpy())).to(rank_data(a).dtype)
        )
    # they differ only on a constant row: 0 for the sanity check, an error for p-faithfulness
    a[0] = 1.0
    assert float(spearman_rank_correlation(a, b)[0]) == 0.0
    with pytest.raises(ValueError, match="constant"):
        p_faithfulness_correlation(a, b)


def test_p_faithfulness_correlation_ranks_low_precision_inputs_exactly() -> None:
    # 600 coalitions: bfloat16 cannot hold every rank, the float64 core can
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(600, generator=gen, dtype=torch.float64)
    b = a + 0.5 * torch.randn(600, generator=gen, dtype=torch.float64)
    want = stats.spearmanr(a.bfloat16().double().numpy(), b.bfloat16().double().numpy()).statistic
    got = p_faithfulness_correlation(a.bfloat16(), b.bfloat16())
    assert got.dtype == torch.bfloat16
    assert float(got) == pytest.approx(want, abs=2e-3)  # half a bfloat16 step at 0.9
