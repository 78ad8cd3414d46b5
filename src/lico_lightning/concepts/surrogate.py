"""The concept surrogate ``f(c)`` of EXPLAIN-R and its per-image explanations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lico_lightning._validation import check_finite, check_int, check_tensor
from lico_lightning.functional.surrogate import concept_contributions

__all__ = ["ConceptExplanation", "ConceptSurrogate"]


@dataclass(frozen=True)
class ConceptExplanation:
    """The top concepts of one image, by decreasing weight.

    Attributes:
        labels: concept names (``"crane"``, ``"microwave (n.)"``).
        indices: their columns in the vocabulary.
        weights: signed shares of the surrogate embedding
            (:func:`~lico_lightning.functional.concept_contributions`); over *all* concepts
            they sum to ``1 - bias_weight``.
        bias_weight: share of the surrogate's bias.
    """

    labels: tuple[str, ...]
    indices: tuple[int, ...]
    weights: tuple[float, ...]
    bias_weight: float

    def __str__(self) -> str:
        return ", ".join(f"{name} {w:.2f}" for name, w in zip(self.labels, self.weights))


class ConceptSurrogate(nn.Module):
    r"""Concept-based surrogate of an image encoder: :math:`f(c) = W c + b` (paper), or an MLP.

    Args:
        num_concepts: C, the vocabulary size.
        embed_dim: K, CLIP's embedding width.
        hidden_dim: ``None`` for the linear surrogate (explainable exactly); an int adds a
            hidden GELU layer (no exact decomposition, :meth:`explain` refuses it).
        bias: learn :math:`b`.

    Example:
        >>> f = ConceptSurrogate(num_concepts=3, embed_dim=4)
        >>> f(torch.rand(2, 3)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self, num_concepts: int, embed_dim: int, hidden_dim: int | None = None, bias: bool = True
    ) -> None:
        super().__init__()
        self.num_concepts = check_int("num_concepts", num_concepts, 1)
        check_int("embed_dim", embed_dim, 1)
        if hidden_dim is None:
            self.net: nn.Module = nn.Linear(num_concepts, embed_dim, bias=bias)
        else:
            check_int("hidden_dim", hidden_dim, 1)
            self.net = nn.Sequential(
                nn.Linear(num_concepts, hidden_dim, bias=bias),
                nn.GELU(),
                nn.Linear(hidden_dim, embed_dim, bias=bias),
            )

    @property
    def is_linear(self) -> bool:
        """Whether :math:`f` is a single linear map (explanations are exact)."""
        return isinstance(self.net, nn.Linear)

    def check_concepts(self, concepts: Tensor) -> Tensor:
        """``(B, C)`` floating concept scores of this surrogate's width (dense or sparse)."""
        check_tensor("concepts", concepts, ndim=2, floating=True)
        if concepts.shape[1] != self.num_concepts:
            raise ValueError(
                f"Expected a concept matrix with {self.num_concepts} columns (the vocabulary "
                f"size), but got shape {tuple(concepts.shape)}."
            )
        return concepts.to_dense() if concepts.is_sparse else concepts

    def forward(self, concepts: Tensor) -> Tensor:
        """``(B, C)`` concept scores → ``(B, K)`` surrogate embeddings (not normalised)."""
        return self.net(self.check_concepts(concepts))

    @torch.no_grad()
    def contributions(self, concepts: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C)`` signed concept weights and ``(B,)`` bias share (they sum to 1 per row)."""
        linear = self.net
        if not isinstance(linear, nn.Linear):  # is_linear
            raise ValueError(
                "Expected a linear surrogate (hidden_dim=None) to decompose its embedding "
                "into concept weights, but this one has a hidden layer."
            )
        concepts = check_finite("concepts", self.check_concepts(concepts))
        return concept_contributions(concepts.to(linear.weight), linear.weight, linear.bias)

    def explain(
        self, concepts: Tensor, labels: Sequence[str], k: int = 10
    ) -> list[ConceptExplanation]:
        """The ``k`` concepts of largest absolute weight per image, sorted by weight (fewer when
        the image has fewer than ``k`` concepts).

        Args:
            concepts: ``(B, C)`` concept scores.
            labels: C concept names (e.g. ``vocabulary.labels()``).
            k: concepts per image (at most C).

        Example:
            >>> f = ConceptSurrogate(2, 2, bias=False)
            >>> with torch.no_grad():
            ...     _ = f.net.weight.copy_(torch.eye(2))
            >>> print(f.explain(torch.tensor([[3.0, 4.0]]), ["dog", "grass"])[0])
            grass 0.64, dog 0.36
        """
        if len(labels) != self.num_concepts:
            raise ValueError(
                f"Expected {self.num_concepts} labels (one per concept), but got {len(labels)}."
            )
        k = min(check_int("k", k, 1), self.num_concepts)
        weights, bias_share = self.contributions(concepts)
        top = weights.abs().topk(k, dim=1).indices
        out = []
        for row, cols, b in zip(weights, top, bias_share):
            # concepts the image does not have (score 0, weight 0) are not listed
            chosen = sorted((c for c in cols.tolist() if row[c] != 0), key=lambda c: -float(row[c]))
            out.append(
                ConceptExplanation(
                    labels=tuple(labels[c] for c in chosen),
                    indices=tuple(chosen),
                    weights=tuple(float(row[c]) for c in chosen),
                    bias_weight=float(b),
                )
            )
        return out
