r"""Spearman's rank correlation: FIxLIP's p-faithfulness (Definition 8) and the
parameter-randomisation sanity check (maps before / after randomising a layer)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lico_lightning._validation import check_choice, check_finite, check_tensor

__all__ = ["spearman_correlation"]


def spearman_correlation(
    a: Tensor, b: Tensor, *, constant: Literal["raise", "zero"] = "raise"
) -> Tensor:
    r"""Spearman's :math:`\rho` along the last dimension: the Pearson correlation of the ranks,
    ties sharing their average rank (like ``scipy.stats.spearmanr``).

    .. math::
        \rho = \frac{\sum_i (r^a_i - \bar r^a)(r^b_i - \bar r^b)}
                    {\lVert r^a - \bar r^a \rVert \, \lVert r^b - \bar r^b \rVert}

    FIxLIP's p-faithfulness correlation (Definition 8) is this with ``a`` the game values
    :math:`\nu(M^{(i)})` and ``b`` the explanation's approximations
    :math:`\hat\nu_e(M^{(i)})` on coalitions drawn from :math:`\mathbb{P}_p`; the sanity check
    of Adebayo et al. uses it on flattened maps with ``constant="zero"`` (a map that became
    constant has lost its ranking).

    Ranks and the correlation are computed in float64, so ranks are exact for any input dtype
    (bfloat16 included) and long rows lose no precision. ``torchmetrics``'
    ``spearman_corrcoef`` handles ties the same way but computes in the input's precision,
    correlates columns of ``(N, d)`` rather than rows, and maps a constant series to 0 with a
    warning; hence this implementation.

    Args:
        a: ``(..., m)`` finite values, ``m >= 2``.
        b: ``(..., m)`` finite values, same shape.
        constant: a row where ``a`` or ``b`` is constant has no correlation: ``"raise"`` a
            ``ValueError``, or score it ``"zero"``.

    Returns:
        ``(...)`` in ``[-1, 1]``, in the promoted floating dtype of ``a`` and ``b``.

    Example:
        >>> spearman_correlation(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 5.0, 7.0, 6.0]))
        tensor(0.8000)
        >>> spearman_correlation(torch.ones(1, 3), torch.rand(1, 3), constant="zero")
        tensor([0.])
    """
    check_tensor("a", a, floating=True)
    check_tensor("b", b, floating=True)
    check_choice("constant", constant, ("raise", "zero"))
    if a.shape != b.shape:
        raise ValueError(
            f"Expected `a` and `b` of the same shape, but got {tuple(a.shape)} and "
            f"{tuple(b.shape)}."
        )
    if a.shape[-1] < 2:
        raise ValueError(f"Expected at least 2 values per row, but got shape {tuple(a.shape)}.")
    check_finite("a", a)
    check_finite("b", b)
    ra = _average_ranks(a)
    rb = _average_ranks(b)
    ra = ra - ra.mean(-1, keepdim=True)
    rb = rb - rb.mean(-1, keepdim=True)
    denom = ra.norm(dim=-1) * rb.norm(dim=-1)
    defined = denom > 0
    if constant == "raise" and not bool(defined.all()):
        raise ValueError(
            "Expected rows that are not constant, but got "
            f"{int((~defined).sum())} constant row(s) (Spearman's correlation is undefined); "
            "pass constant='zero' to score them 0."
        )
    rho = torch.where(defined, (ra * rb).sum(-1) / denom.clamp_min(1e-300), 0.0)
    return rho.clamp(-1.0, 1.0).to(torch.promote_types(a.dtype, b.dtype))


def _average_ranks(x: Tensor) -> Tensor:
    """1-based float64 ranks along the last dimension, ties sharing their average rank:
    ``(left + right + 1) / 2`` with ``left`` / ``right`` the insertion points of each value in
    the sorted row (``left + 1`` is the first and ``right`` the last rank of its tie group)."""
    sorted_x = x.sort(dim=-1).values.contiguous()
    xc = x.contiguous()
    left = torch.searchsorted(sorted_x, xc, side="left")
    right = torch.searchsorted(sorted_x, xc, side="right")
    return (left + right + 1).to(torch.float64) / 2.0
