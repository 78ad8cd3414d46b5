"""Shared pieces of the Banzhaf algebra: the explanation type, limits and input checks."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from lico_lightning._validation import (
    check_tensor,
)

InteractionKind = Literal["all", "cross", "none"]


_KINDS = ("all", "cross", "none")


#: Largest number of players enumerated in exact mode (2^n coalitions).
MAX_EXACT_PLAYERS = 20


class BanzhafInteractions(NamedTuple):
    """A 2-additive explanation :math:`e`.

    Attributes:
        constant: 0-dim, :math:`e_0` (:math:`\\hat\\nu_e(\\emptyset)`).
        first_order: ``(n,)`` :math:`e_i`.
        second_order: ``(n, n)`` symmetric :math:`e_{ij}`, zero diagonal; zero for pairs outside
            the fitted basis.
        clique: ``(n,)`` bool, the players whose pairs were fitted (all True without two-step
            filtering; all False when no pairs were fitted).
    """

    constant: Tensor
    first_order: Tensor
    second_order: Tensor
    clique: Tensor


def _check_masks(name: str, masks: object, ndim: int | None = 2) -> None:
    t = check_tensor(name, masks, ndim=ndim, nonempty=False)
    if t.dtype != torch.bool:
        raise TypeError(f"Expected `{name}` to be a bool tensor, but got {t.dtype}.")


def _check_rows(m: int, **tensors: Tensor) -> list[Tensor]:
    out = []
    for name, t in tensors.items():
        check_tensor(name, t, ndim=1, floating=True, nonempty=False, shape=(m,))
        out.append(t.to(torch.float64))
    return out


def _check_pairs(pairs: Tensor, n: int) -> Tensor:
    check_tensor("pairs", pairs, ndim=2, nonempty=False)
    if pairs.shape[1] != 2 or pairs.dtype != torch.long:
        raise ValueError(
            f"Expected `pairs` to be (P, 2) long, but got {pairs.dtype} {tuple(pairs.shape)}."
        )
    if pairs.numel() and bool(
        ((pairs[:, 0] >= pairs[:, 1]) | (pairs[:, 0] < 0) | (pairs[:, 1] >= n)).any()
    ):
        raise ValueError(f"Expected pairs (i, j) with 0 <= i < j < {n}, but some are not.")
    return pairs
