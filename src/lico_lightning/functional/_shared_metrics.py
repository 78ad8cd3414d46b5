r"""Metric formulas shared by several public views, each written once (pure torch).

The classifier-saliency metrics (:mod:`~lico_lightning.functional.saliency`), the
dual-encoder grounding metrics (:mod:`~lico_lightning.functional.grounding`) and the
interaction metrics (:mod:`~lico_lightning.functional.interaction_metrics`) were written for
different input formats — per-image box lists at pixel resolution, one box per pair on a
patch grid, batches of game values — but several of their formulas are the same. The public
functions keep their own inputs, validation and reductions and call the cores here.

No input checks happen here: callers validate first.
"""

from __future__ import annotations

import torch
from torch import Tensor


# --------------------------------------------------------------------------- rank correlation
def average_ranks(x: Tensor, dtype: torch.dtype) -> Tensor:
    """1-based ranks along the last dimension, ties sharing their average rank, in ``dtype``.

    ``(left + right + 1) / 2`` with ``left`` / ``right`` the insertion points of each value in
    the sorted row: ``left + 1`` is the first and ``right`` the last rank of its tie group.
    """
    sorted_x = x.sort(dim=-1).values.contiguous()
    xc = x.contiguous()
    left = torch.searchsorted(sorted_x, xc, side="left")
    right = torch.searchsorted(sorted_x, xc, side="right")
    return (left + right + 1).to(dtype) / 2.0


def rank_correlation(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    r"""Spearman's :math:`\rho` along the last dimension (Pearson correlation of average ranks).

    .. math::
        \rho = \frac{\sum_i (r^a_i - \bar r^a)(r^b_i - \bar r^b)}
                    {\lVert r^a - \bar r^a \rVert \, \lVert r^b - \bar r^b \rVert}

    Computed in float64 (ranks are exact there). Returns ``(rho, defined)``: ``defined`` is
    False where a row is constant (no ranking), and ``rho`` is 0 there instead of NaN.
    """
    ra = average_ranks(a, torch.float64)
    rb = average_ranks(b, torch.float64)
    ra = ra - ra.mean(-1, keepdim=True)
    rb = rb - rb.mean(-1, keepdim=True)
    denom = ra.norm(dim=-1) * rb.norm(dim=-1)
    defined = denom > 0
    rho = torch.where(defined, (ra * rb).sum(-1) / denom.clamp_min(1e-300), 0.0)
    return rho.clamp(-1.0, 1.0), defined
