r"""How faithfully a surrogate reproduces CLIP's retrievals (EXPLAIN-R Tables 2–5).

* **Faithfulness** (Tables 2–3): the ground truth of each query is *CLIP's own* top-1
  retrieval (argmax of CLIP's similarity row, first index on ties); R@K is the share of queries
  whose CLIP top-1 is in the surrogate's top K (pessimistic ties, see
  :func:`~lico_lightning.functional.retrieval_ranks`).
* **Performance** (Tables 4–5): the same R@K with the dataset pairing as ground truth
  (``reference="pairing"``: image *i* ↔ caption *i*).

Both follow the paper's protocol: consecutive, unshuffled blocks of ``block_size`` pairs (one
caption per image), every image of a block against every caption of the same block, R@K per
block, then the mean over blocks (each block weighs the same; a last, shorter block counts as
one block). The R@K itself is :func:`~lico_lightning.functional.retrieval_recall_at_k`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lico_lightning._validation import check_choice, check_int, check_tensor
from lico_lightning.functional.retrieval import retrieval_recall_at_k

__all__ = ["blockwise_retrieval_faithfulness", "retrieval_faithfulness"]

#: What counts as the right item: CLIP's own top-1 (faithfulness) or the dataset pairing.
RETRIEVAL_REFERENCES = ("clip", "pairing")


def _top1_relevance(scores: Tensor) -> Tensor:
    """One-hot ``(Q, N)`` bool of each row's argmax (first index on ties)."""
    return F.one_hot(scores.argmax(dim=1), scores.shape[1]).bool()


def retrieval_faithfulness(
    surrogate_scores: Tensor,
    clip_scores: Tensor | None,
    k: Sequence[int] = (1, 5, 10),
    reference: Literal["clip", "pairing"] = "clip",
) -> Tensor:
    r"""R@K of one block, image→text and text→image.

    .. math::

        \mathrm{R@}K_{I\to T} = \frac1B\sum_i \mathbb 1\big[\operatorname{rank}_{S_{i\cdot}}
        (\arg\max_j C_{ij}) \le K\big]

    and the same on the transposed matrices for text→image.

    Args:
        surrogate_scores: ``(B, B)`` surrogate similarities, rows = images, columns = captions.
        clip_scores: ``(B, B)`` CLIP similarities (``reference="clip"``); ignored (may be
            ``None``) with ``reference="pairing"``.
        k: cut-offs.
        reference: ``"clip"`` (faithfulness) or ``"pairing"`` (performance: caption *i* is the
            answer of image *i*).

    Returns:
        ``(2, len(k))``: row 0 image→text, row 1 text→image.

    Example:
        >>> clip = torch.tensor([[0.9, 0.1], [0.8, 0.2]])  # I→T: caption 0 for both images
        >>> sur = torch.tensor([[0.5, 0.7], [0.6, 0.1]])  # T→I: CLIP image 0, 1; surrogate 1, 0
        >>> retrieval_faithfulness(sur, clip, k=(1, 2))
        tensor([[0.5000, 1.0000],
                [0.0000, 1.0000]])
    """
    check_choice("reference", reference, RETRIEVAL_REFERENCES)
    check_tensor("surrogate_scores", surrogate_scores, ndim=2, floating=True)
    b = surrogate_scores.shape[0]
    if surrogate_scores.shape[1] != b:
        raise ValueError(
            "Expected a square `surrogate_scores` block (one caption per image), but got shape "
            f"{tuple(surrogate_scores.shape)}."
        )
    if reference == "pairing":
        eye = torch.eye(b, dtype=torch.bool, device=surrogate_scores.device)
        i2t_rel = t2i_rel = eye
    else:
        clip_scores = check_tensor("clip_scores", clip_scores, ndim=2, floating=True)
        if clip_scores.shape != surrogate_scores.shape:
            raise ValueError(
                f"Expected `clip_scores` of shape {tuple(surrogate_scores.shape)}, but got "
                f"{tuple(clip_scores.shape)}."
            )
        i2t_rel, t2i_rel = _top1_relevance(clip_scores), _top1_relevance(clip_scores.T)
    return torch.stack(
        [
            retrieval_recall_at_k(surrogate_scores, i2t_rel, k),
            retrieval_recall_at_k(surrogate_scores.T, t2i_rel, k),
        ]
    )


def blockwise_retrieval_faithfulness(
    surrogate_embeds: Tensor,
    image_embeds: Tensor | None,
    text_embeds: Tensor,
    k: Sequence[int] = (1, 5, 10),
    block_size: int = 1000,
    reference: Literal["clip", "pairing"] = "clip",
) -> Tensor:
    """The paper's protocol over a whole split: :func:`retrieval_faithfulness` on consecutive
    blocks of ``block_size`` pairs (cosine similarities), averaged over blocks.

    Args:
        surrogate_embeds: ``(N, K)`` surrogate image embeddings, in dataset order.
        image_embeds: ``(N, K)`` CLIP image embeddings (``None`` with ``reference="pairing"``).
        text_embeds: ``(N, K)`` CLIP embeddings of one caption per image (the first in
            evaluation).
        k: cut-offs.
        block_size: pairs per block (paper: 1000).
        reference: ``"clip"`` or ``"pairing"``.

    Returns:
        ``(2, len(k))``: image→text, text→image.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> img, txt = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
        >>> blockwise_retrieval_faithfulness(img, img, txt, k=(1,), block_size=2)  # CLIP itself
        tensor([[1.],
                [1.]])
    """
    check_int("block_size", block_size, 1)
    check_tensor("surrogate_embeds", surrogate_embeds, ndim=2, floating=True)
    check_tensor("text_embeds", text_embeds, ndim=2, floating=True)
    others = [("text_embeds", text_embeds)]
    image: Tensor | None = None
    if reference != "pairing":
        image = check_tensor("image_embeds", image_embeds, ndim=2)
        others.append(("image_embeds", image))
    for name, x in others:
        if x.shape != surrogate_embeds.shape:
            raise ValueError(
                f"Expected `{name}` of shape {tuple(surrogate_embeds.shape)} (one caption per "
                f"image), but got {tuple(x.shape)}."
            )
    sur = F.normalize(surrogate_embeds.float(), dim=-1)
    txt = F.normalize(text_embeds.float(), dim=-1)
    img = None if image is None else F.normalize(image.float(), dim=-1)
    blocks = []
    for start in range(0, sur.shape[0], block_size):
        stop = start + block_size
        t = txt[start:stop]
        clip = None if img is None else img[start:stop] @ t.T
        blocks.append(retrieval_faithfulness(sur[start:stop] @ t.T, clip, k, reference))
    return torch.stack(blocks).mean(dim=0)
