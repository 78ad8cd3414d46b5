"""Index bookkeeping shared by the batch-level losses and modules."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["first_occurrences"]


def first_occurrences(indices: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique values of ``indices`` ``(B,)`` and the position of each one's first
    occurrence (both ``(U,)``): which batch row speaks for a repeated sample index.

    Example:
        >>> first_occurrences(torch.tensor([5, 2, 5, 7, 2]))
        (tensor([2, 5, 7]), tensor([1, 0, 3]))
    """
    unique, inverse = torch.unique(indices, return_inverse=True)
    positions = torch.arange(indices.shape[0], device=indices.device)
    first = torch.full_like(unique, indices.shape[0]).scatter_reduce(
        0, inverse, positions, reduce="amin"
    )
    return unique, first
