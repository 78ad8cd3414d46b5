"""Subsets of players: two-step clique selection and the greedy subsets of Definition 9."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lico_lightning._validation import (
    check_int,
    check_tensor,
)


def select_clique(first_order: Tensor, n_image: int, n_text: int, size: int) -> Tensor:
    """Two-step filtering (§3.3, Appendix B.1): the players whose pairs are fitted.

    Keeps the :math:`k_T = \\min(n_T, \\max(5, \\lceil k\\, n_T / n \\rceil))` text and
    :math:`k_I = k - k_T` image players with the largest :math:`|e_i|` (capped at the number of
    players of each modality). With ``n_text = 0``, the top-``k`` players overall.

    Args:
        first_order: ``(n,)`` first-order attributions (image players first).
        n_image: image players.
        n_text: text players.
        size: clique size :math:`k` (paper: 72).

    Returns:
        ``(n,)`` bool.

    Example:
        >>> select_clique(torch.tensor([0.1, -3.0, 0.2, 5.0, 0.0, 1.0]), 3, 3, 4).tolist()
        [False, True, False, True, True, True]
    """
    check_tensor("first_order", first_order, ndim=1, floating=True)
    n = n_image + n_text
    if first_order.shape[0] != n:
        raise ValueError(
            f"Expected `first_order` of shape ({n},), but got {tuple(first_order.shape)}."
        )
    check_int("size", size, 2)
    keep = torch.zeros(n, dtype=torch.bool, device=first_order.device)
    if size >= n:
        return keep.fill_(True)
    if n_text == 0:
        keep[first_order.abs().topk(size).indices] = True
        return keep
    k_text = min(n_text, max(5, math.ceil(size * n_text / n)))
    k_image = min(n_image, size - k_text)
    if k_image > 0:
        keep[first_order[:n_image].abs().topk(k_image).indices] = True
    keep[n_image + first_order[n_image:].abs().topk(k_text).indices] = True
    return keep


def greedy_subsets(
    first_order: Tensor,
    second_order: Tensor,
    constant: Tensor | float = 0.0,
    *,
    maximize: bool = True,
    starts: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Greedy search of :math:`M_{e,\\max,k}` / :math:`M_{e,\\min,k}` for every size ``k`` (Appendix B.1).

    From every start player (or the given ``starts``) in parallel, repeatedly add the player
    with the largest marginal gain :math:`e_j + \\sum_{i \\in M} e_{ij}` (smallest when
    ``maximize=False``); for each size keep the best subset over all starts. Exact for
    explanations without pairs (Proposition 1: top-``k`` players). Vectorised: one ``(s, n)``
    update per size, ties broken towards the lower index.

    Args:
        first_order: ``(n,)``.
        second_order: ``(n, n)`` symmetric, zero diagonal.
        constant: :math:`e_0` added to the values.
        maximize: search :math:`\\arg\\max` (insertion) or :math:`\\arg\\min` (deletion).
        starts: ``(s,)`` long start players (default: all).

    Returns:
        ``masks`` ``(n+1, n)`` bool (row ``k`` has ``k`` players; row 0 is empty) and their
        approximated values :math:`\\hat\\nu_e` ``(n+1,)``.

    Example:
        >>> e2 = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
        >>> masks, v = greedy_subsets(torch.tensor([1.0, 2.0, -1.0]), e2)
        >>> masks.int().tolist(), v.tolist()
        ([[0, 0, 0], [0, 1, 0], [1, 0, 1], [1, 1, 1]], [0.0, 2.0, 5.0, 7.0])
    """
    check_tensor("first_order", first_order, ndim=1, floating=True)
    n = first_order.shape[0]
    check_tensor("second_order", second_order, ndim=2, floating=True)
    if tuple(second_order.shape) != (n, n):
        raise ValueError(
            f"Expected `second_order` of shape ({n}, {n}), but got {tuple(second_order.shape)}."
        )
    dev = first_order.device
    if starts is None:
        starts = torch.arange(n, device=dev)
    else:
        check_tensor("starts", starts, ndim=1)
        if starts.dtype != torch.long or bool(((starts < 0) | (starts >= n)).any()):
            raise ValueError(
                f"Expected `starts` to be long player indices in [0, {n}), but got {starts}."
            )
        starts = starts.to(dev)
    sign = 1.0 if maximize else -1.0
    e1 = sign * first_order
    e2 = sign * (second_order - torch.diag_embed(second_order.diagonal()))
    s = starts.shape[0]
    rows = torch.arange(s, device=dev)
    chosen = torch.zeros(s, n, dtype=torch.bool, device=dev)
    chosen[rows, starts] = True
    gains = e1[None, :] + e2[starts]
    order = torch.empty(s, n, dtype=torch.long, device=dev)
    values = torch.empty(s, n, dtype=e1.dtype, device=dev)
    order[:, 0] = starts
    values[:, 0] = e1[starts]
    for k in range(1, n):
        g = gains.masked_fill(chosen, float("-inf"))
        best, j = g.max(1)
        values[:, k] = values[:, k - 1] + best
        order[:, k] = j
        chosen[rows, j] = True
        gains += e2[j]
    best_start = values.argmax(0)  # (n,) best start for size k+1
    rank = torch.empty(s, n, dtype=torch.long, device=dev)
    rank.scatter_(1, order, torch.arange(n, device=dev).expand(s, n))
    sizes = torch.arange(1, n + 1, device=dev)
    masks = rank[best_start] < sizes[:, None]
    masks = torch.cat([torch.zeros(1, n, dtype=torch.bool, device=dev), masks])
    best_vals = values.gather(0, best_start[None])[0]
    out = torch.cat([best_vals.new_zeros(1), sign * best_vals]) + constant
    return masks, out
