"""Exact FIxLIP (all 2^n coalitions), Theorem 1 (Banzhaf values) and the surrogate game."""

from __future__ import annotations

import torch
from torch import Tensor

from lico_lightning._validation import (
    check_probability,
    check_tensor,
)
from lico_lightning.functional.banzhaf._coalitions import (
    all_coalitions,
    banzhaf_kernel_weights,
)
from lico_lightning.functional.banzhaf._common import (
    BanzhafInteractions,
    _check_masks,
    _check_pairs,
)
from lico_lightning.functional.banzhaf._least_squares import (
    interaction_pairs,
    solve_interactions,
)


def exact_banzhaf_interactions(
    values: Tensor, p: float, *, pairs: Tensor | None = None
) -> BanzhafInteractions:
    """FIxLIP-p of a game given by all its ``2^n`` values (Definition 5, by enumeration).

    Args:
        values: ``(2^n,)`` game values; entry ``c`` is :math:`\\nu(M)` for the coalition whose
            players are the set bits of ``c`` (the row order of :func:`all_coalitions`).
        p: probability that a player is present, in (0, 1).
        pairs: basis pairs (default: all pairs).

    Over all coalitions weighted by :math:`\\mathbb{P}_p` the normal matrix is known in closed
    form, :math:`G_{\\alpha\\beta} = p^{|\\alpha \\cup \\beta|}`, and the right-hand side needs
    only :math:`\\sum_M w_M \\nu(M) x_i x_j`: :math:`O(2^n n^2)` work, no design matrix.

    Returns:
        The explanation minimising :math:`\\mathfrak{F}_p` exactly; its pairs are the weighted
        Banzhaf interaction indices and (Theorem 1) :func:`banzhaf_values_from_interactions`
        gives the weighted Banzhaf values.

    Example:
        >>> v = torch.tensor([0.0, 1.0, 2.0, 4.0])  # ν = x1 + 2·x2 + x1·x2
        >>> e = exact_banzhaf_interactions(v, 0.3)
        >>> round(e.constant.item(), 6) + 0.0, e.first_order.round(decimals=6).tolist()
        (0.0, [1.0, 2.0])
        >>> round(e.second_order[0, 1].item(), 6)
        1.0
    """
    check_tensor("values", values, ndim=1, floating=True)
    check_probability("p", p)
    m = values.shape[0]
    n = m.bit_length() - 1
    if m != 2**n:
        raise ValueError(f"Expected 2^n game values, but got {m}.")
    if n == 0:
        raise ValueError("Expected a game with at least one player, but got 1 value.")
    pairs = _check_pairs(interaction_pairs(n) if pairs is None else pairs, n).to(values.device)
    masks = all_coalitions(n, device=values.device)
    x = masks.to(torch.float64)
    wy = banzhaf_kernel_weights(masks, p) * values.to(torch.float64)
    # Over all coalitions with their exact weights, E[z_α z_β] = p^{|α ∪ β|}: the Gram matrix is
    # known in closed form, and the right-hand side needs only the n × n moments of w·ν.
    moments = x.T @ (x * wy[:, None])  # (n, n); diagonal = Σ_{M ∋ i} w ν
    rhs = torch.cat([wy.sum()[None], moments.diagonal(), moments[pairs[:, 0], pairs[:, 1]]])
    members = torch.zeros(1 + n + pairs.shape[0], n, dtype=torch.float64, device=values.device)
    members[torch.arange(1, 1 + n), torch.arange(n)] = 1.0
    rows = torch.arange(1 + n, 1 + n + pairs.shape[0], device=values.device)
    members[rows, pairs[:, 0]] = 1.0
    members[rows, pairs[:, 1]] = 1.0
    size = members.sum(-1)
    union = size[:, None] + size[None, :] - members @ members.T
    gram = torch.full_like(union, p).pow(union)
    return solve_interactions(gram, rhs, n, pairs)


def banzhaf_values_from_interactions(first_order: Tensor, second_order: Tensor, p: float) -> Tensor:
    """First-order conversion of Theorem 1: :math:`\\phi_i = e_i + p \\sum_{j \\neq i} e_{ij}`.

    These are the weighted Banzhaf values of :math:`\\hat\\nu_e` (and of :math:`\\nu` itself for
    the exact FIxLIP-p, whose first-order projection is the game's).

    Args:
        first_order: ``(..., n)``.
        second_order: ``(..., n, n)`` symmetric with zero diagonal.
        p: probability that a player is present.

    Example:
        >>> banzhaf_values_from_interactions(torch.tensor([1.0, 2.0]), torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 0.5)
        tensor([1.5000, 2.5000])
    """
    check_tensor("first_order", first_order, floating=True)
    check_tensor("second_order", second_order, floating=True)
    check_probability("p", p)
    n = first_order.shape[-1]
    if tuple(second_order.shape[-2:]) != (n, n):
        raise ValueError(
            f"Expected `second_order` of shape (..., {n}, {n}), but got {tuple(second_order.shape)}."
        )
    off = second_order - torch.diag_embed(second_order.diagonal(dim1=-2, dim2=-1))
    return first_order + p * off.sum(-1)


def approximate_game_values(
    masks: Tensor, constant: Tensor | float, first_order: Tensor, second_order: Tensor
) -> Tensor:
    """:math:`\\hat\\nu_e(M) = e_0 + \\sum_{i \\in M} e_i + \\sum_{i<j \\in M} e_{ij}` for many coalitions.

    Args:
        masks: ``(..., m, n)`` bool coalitions.
        constant: :math:`e_0` (scalar or broadcastable to ``(..., m)``).
        first_order: ``(n,)``.
        second_order: ``(n, n)`` symmetric, zero diagonal.

    Returns:
        ``(..., m)``.

    Example:
        >>> approximate_game_values(torch.tensor([[True, True]]), 0.5, torch.tensor([1.0, 2.0]),
        ...                         torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
        tensor([4.5000])
    """
    _check_masks("masks", masks, ndim=None)
    check_tensor("first_order", first_order, ndim=1, floating=True)
    n = first_order.shape[0]
    check_tensor("second_order", second_order, ndim=2, floating=True)
    if masks.shape[-1] != n or tuple(second_order.shape) != (n, n):
        raise ValueError(
            f"Expected `masks` (..., {n}) and `second_order` ({n}, {n}) for {n} players, but got "
            f"{tuple(masks.shape)} and {tuple(second_order.shape)}."
        )
    x = masks.to(first_order.dtype)
    quad = 0.5 * ((x @ second_order) * x).sum(-1)
    return constant + x @ first_order + quad
