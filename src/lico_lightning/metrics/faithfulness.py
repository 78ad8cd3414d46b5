"""EXPLAIN-R retrieval faithfulness / performance as a ``torchmetrics.Metric`` (DDP-correct).

The paper's block protocol needs the pairs in *dataset order* (consecutive blocks of 1000), which
a distributed sampler scatters across ranks. The metric therefore keeps the embeddings and the
dataset index of every pair (list states, gathered across processes), and :meth:`compute`
sorts them by index (a duplicate from a padding sampler counts once) before
:func:`~lico_lightning.functional.blockwise_retrieval_faithfulness`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lico_lightning._validation import check_choice, check_int, check_tensor
from lico_lightning.functional.faithfulness import (
    RETRIEVAL_REFERENCES,
    blockwise_retrieval_faithfulness,
)

__all__ = ["RetrievalFaithfulness"]


class RetrievalFaithfulness(Metric):
    """R@K of a surrogate against CLIP's own top-1 (``reference="clip"``) or the dataset
    pairing (``"pairing"``), both directions, on consecutive blocks of ``block_size`` pairs.

    Args:
        k: cut-offs.
        block_size: pairs per block (paper: 1000).
        reference: ``"clip"`` (faithfulness, Tables 2–3) or ``"pairing"`` (performance,
            Tables 4–5).

    :meth:`compute` returns ``(2, len(k))``: image→text, text→image.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> img, txt = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
        >>> metric = RetrievalFaithfulness(k=(1, 3), block_size=3)
        >>> metric.update(img[3:], img[3:], txt[3:], torch.arange(3, 6))  # any order
        >>> metric.update(img[:3], img[:3], txt[:3], torch.arange(3))
        >>> metric.compute()  # CLIP is perfectly faithful to itself
        tensor([[1., 1.],
                [1., 1.]])
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    surrogate: list[Tensor]
    image: list[Tensor]
    text: list[Tensor]
    index: list[Tensor]

    def __init__(
        self,
        k: Sequence[int] = (1, 5, 10),
        block_size: int = 1000,
        reference: Literal["clip", "pairing"] = "clip",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(k, int) or not isinstance(k, Sequence) or len(k) == 0:
            raise TypeError(f"Expected `k` to be a non-empty sequence of ints, but got {k!r}.")
        self.k = tuple(check_int("k", value, 1) for value in k)
        self.block_size = check_int("block_size", block_size, 1)
        self.reference: Literal["clip", "pairing"] = reference
        check_choice("reference", reference, RETRIEVAL_REFERENCES)
        for name in ("surrogate", "image", "text", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        surrogate_embeds: Tensor,
        image_embeds: Tensor | None,
        text_embeds: Tensor,
        indices: Tensor,
    ) -> None:
        """Add ``(B, K)`` surrogate / CLIP image / CLIP caption embeddings and ``(B,)`` indices."""
        check_tensor("surrogate_embeds", surrogate_embeds, ndim=2, floating=True)
        check_tensor("text_embeds", text_embeds, ndim=2, floating=True)
        check_tensor("indices", indices, ndim=1)
        if image_embeds is None:
            if self.reference == "clip":
                raise ValueError(
                    "Expected CLIP's `image_embeds` for reference='clip', but got None."
                )
            image_embeds = surrogate_embeds
        for name, x in (("image_embeds", image_embeds), ("text_embeds", text_embeds)):
            if x.shape != surrogate_embeds.shape:
                raise ValueError(
                    f"Expected `{name}` of shape {tuple(surrogate_embeds.shape)}, but got "
                    f"{tuple(x.shape)}."
                )
        if indices.shape[0] != surrogate_embeds.shape[0] or indices.is_floating_point():
            raise ValueError(
                f"Expected integer `indices` of shape ({surrogate_embeds.shape[0]},), but got "
                f"{indices.dtype} of shape {tuple(indices.shape)}."
            )
        self.surrogate.append(surrogate_embeds.detach().float())
        self.image.append(image_embeds.detach().float())
        self.text.append(text_embeds.detach().float())
        self.index.append(indices.detach().long())

    def compute(self) -> Tensor:
        if isinstance(self.index, list) and not self.index:  # (a tensor after a DDP sync)
            raise ValueError(
                "Expected at least one update before compute() of RetrievalFaithfulness, but got none."
            )
        index = dim_zero_cat(self.index)
        unique, inverse = torch.unique(index, return_inverse=True)

        def ordered(
            state: list[Tensor] | Tensor,
        ) -> Tensor:  # rows sorted by index; duplicates are equal
            x = dim_zero_cat(state)
            out = x.new_empty((unique.shape[0], x.shape[1]))
            out[inverse] = x
            return out

        return blockwise_retrieval_faithfulness(
            ordered(self.surrogate),
            ordered(self.image),
            ordered(self.text),
            self.k,
            self.block_size,
            self.reference,
        )
