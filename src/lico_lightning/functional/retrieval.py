"""Rank-based retrieval metrics (image↔text R@K) on a dense query × item score matrix.

Why not torchmetrics' ``RetrievalRecall``: in torchmetrics 1.9 the retrieval functions keep
only relevant items whose score is > 0 (``retrieval_recall(tensor([-0.2, -0.5]),
tensor([True, False]), top_k=1)`` is ``0.``, although the relevant item ranks first), so CLIP's
cosine similarities, which can be negative, are silently under-reported; its recall is also
"share of the relevant items retrieved", which for 5 captions per image caps R@1 at 0.2, and
the class stores every score (N² for a retrieval split). COCO / Flickr30k R@K is a *hit rate*:
a query counts when *any* of its relevant items is in the top K. That is what this module
computes, from the rank of the best-ranked relevant item.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lico_lightning._validation import check_int, check_tensor

__all__ = ["retrieval_ranks", "retrieval_recall_at_k"]


def _check_scores_relevant(scores: object, relevant: object) -> tuple[Tensor, Tensor]:
    scores = check_tensor("scores", scores, ndim=2, floating=True)
    relevant = check_tensor("relevant", relevant, ndim=2)
    if relevant.dtype != torch.bool:
        raise TypeError(f"Expected `relevant` to be a bool tensor, but got {relevant.dtype}.")
    if relevant.shape != scores.shape:
        raise ValueError(
            f"Expected `relevant` to have the shape of `scores` {tuple(scores.shape)}, "
            f"but got {tuple(relevant.shape)}."
        )
    if bool(torch.isnan(scores).any()):
        raise ValueError(
            f"Expected `scores` without NaN, but got {int(torch.isnan(scores).sum())} NaN "
            f"value(s) in a tensor of shape {tuple(scores.shape)}."
        )
    no_relevant = ~relevant.any(dim=1)
    if bool(no_relevant.any()):
        rows = torch.nonzero(no_relevant).flatten()[:5].tolist()
        raise ValueError(
            "Expected every query to have at least one relevant item, but got "
            f"{int(no_relevant.sum())} query row(s) without one (first: {rows})."
        )
    return scores, relevant


def _check_k(k: Sequence[int]) -> tuple[int, ...]:
    if isinstance(k, int) or not isinstance(k, Sequence) or len(k) == 0:
        raise TypeError(f"Expected `k` to be a non-empty sequence of ints, but got {k!r}.")
    return tuple(check_int("k", value, 1) for value in k)


def retrieval_ranks(scores: Tensor, relevant: Tensor) -> Tensor:
    """1-based rank of the best-ranked relevant item of each query.

    Items are sorted by decreasing score; ties are broken pessimistically: an irrelevant item
    with the same score as the best relevant one ranks ahead of it (so a constant score matrix
    scores as badly as it deserves).

    .. math::

        r_q = 1 + \\#\\{\\, j \\notin \\mathcal{R}_q : s_{qj} \\ge \\max_{i \\in \\mathcal{R}_q} s_{qi} \\,\\}

    Args:
        scores: ``(Q, N)`` float scores (e.g. cosine similarities, any sign; ±Inf allowed).
        relevant: ``(Q, N)`` bool, True where item ``j`` is a correct answer for query ``q``
            (several per query allowed, e.g. the 5 COCO captions of an image).

    Returns:
        ``(Q,)`` long ranks in ``[1, N]``.

    Raises:
        ValueError: NaN scores, mismatched shapes, or a query without any relevant item.

    Example:
        >>> scores = torch.tensor([[0.1, -0.3, 0.1], [-0.2, -0.1, -0.5]])
        >>> relevant = torch.tensor([[True, False, False], [True, False, True]])
        >>> retrieval_ranks(scores, relevant)  # row 0: the tie with item 2 counts against us
        tensor([2, 2])
    """
    scores, relevant = _check_scores_relevant(scores, relevant)
    best = scores.masked_fill(~relevant, float("-inf")).amax(dim=1, keepdim=True)
    ahead = (scores >= best) & ~relevant
    return ahead.sum(dim=1) + 1


def retrieval_recall_at_k(
    scores: Tensor, relevant: Tensor, k: Sequence[int] = (1, 5, 10)
) -> Tensor:
    """Hit rate R@K: share of queries with at least one relevant item in their top ``K``.

    .. math::

        \\mathrm{R@}K = \\frac{1}{Q} \\sum_q \\mathbb{1}[\\, r_q \\le K \\,]

    with :math:`r_q` from :func:`retrieval_ranks` (pessimistic ties).

    Args:
        scores: ``(Q, N)`` float scores.
        relevant: ``(Q, N)`` bool relevance.
        k: cut-offs (ints ≥ 1).

    Returns:
        ``(len(k),)`` float32 hit rates in ``[0, 1]``.

    Example:
        >>> scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.1, 0.3]])
        >>> relevant = torch.eye(3, dtype=torch.bool)[:2]  # ranks 1 and 3
        >>> retrieval_recall_at_k(scores, relevant, k=(1, 3))
        tensor([0.5000, 1.0000])
    """
    ks = _check_k(k)
    ranks = retrieval_ranks(scores, relevant)
    cutoffs = torch.tensor(ks, device=ranks.device).unsqueeze(1)
    return (ranks.unsqueeze(0) <= cutoffs).float().mean(dim=1)
