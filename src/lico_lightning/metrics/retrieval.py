"""Retrieval hit rate R@K as a ``torchmetrics.Metric`` with count states (DDP-correct).

Why not ``torchmetrics.retrieval.RetrievalRecall``: see :mod:`lico_lightning.functional.retrieval`
(it drops relevant items with score ≤ 0, computes recall instead of the COCO hit rate, and stores
every score).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lico_lightning._validation import check_int
from lico_lightning.functional.retrieval import retrieval_ranks

__all__ = ["RetrievalRecallAtK"]


class RetrievalRecallAtK(Metric):
    """Hit rate R@K over all queries seen: share with a relevant item in their top ``K``.

    Each :meth:`update` takes a chunk of queries scored against *all* items (a ``(Q, N)`` slice
    of the full similarity matrix), so the whole split never needs to sit in memory; the states
    are integer counts summed across processes, so the value under DDP equals one process over
    every query.

    .. math::

        \\mathrm{R@}K = \\frac{1}{Q} \\sum_q \\mathbb{1}[\\, r_q \\le K \\,]

    with :math:`r_q` the pessimistic-tie rank of :func:`~lico_lightning.functional.retrieval_ranks`.

    Args:
        k: cut-offs (ints ≥ 1); :meth:`compute` returns one value per cut-off, in this order
            (a 0-d tensor for a single cut-off: torchmetrics squeezes one-element results).

    Example:
        >>> metric = RetrievalRecallAtK(k=(1, 2))
        >>> metric.update(torch.tensor([[0.9, 0.1, 0.5]]), torch.tensor([[False, False, True]]))
        >>> metric.update(torch.tensor([[-0.2, -0.3, -0.1]]), torch.tensor([[False, False, True]]))
        >>> metric.compute()
        tensor([0.5000, 1.0000])
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    hits: Tensor
    total: Tensor

    def __init__(self, k: Sequence[int] = (1, 5, 10), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(k, int) or not isinstance(k, Sequence) or len(k) == 0:
            raise TypeError(f"Expected `k` to be a non-empty sequence of ints, but got {k!r}.")
        self.k = tuple(check_int("k", value, 1) for value in k)
        self.add_state(
            "hits", default=torch.zeros(len(self.k), dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: Tensor, relevant: Tensor) -> None:
        """Add ``(Q, N)`` float scores of a query chunk against all items, ``(Q, N)`` bool relevance."""
        ranks = retrieval_ranks(scores, relevant)
        cutoffs = torch.tensor(self.k, device=ranks.device).unsqueeze(1)
        self.hits += (ranks.unsqueeze(0) <= cutoffs).sum(dim=1)
        self.total += ranks.numel()

    def compute(self) -> Tensor:
        if int(self.total) == 0:
            raise ValueError(
                "Expected at least one update before compute() of RetrievalRecallAtK, but got none."
            )
        return (self.hits.double() / self.total).float()
