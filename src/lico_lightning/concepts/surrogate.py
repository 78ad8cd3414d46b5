"""The concept surrogate ``f(c)`` of EXPLAIN-R and its per-image explanations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

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

    **Non-negativity** (``nonnegative=True``) constrains the concept weights, never the
    scores (those are caption shares in [0, 1] already) nor the bias:

    .. math::

        W_{kc} \ge 0 \quad\text{(linear: } W\text{; MLP: the first layer's weight)}.

    Since :math:`c \ge 0`, two concepts' terms :math:`c_a W_{:,a}`, :math:`c_b W_{:,b}` then
    never point against each other (:math:`W_{:,a}^\top W_{:,b} \ge 0`): in the decomposition of
    :meth:`contributions` the concept–concept part of every weight is :math:`\ge 0`, and with
    ``bias=False`` every concept weight is :math:`\ge 0` (a purely additive explanation, as
    SpLiCE's). Only the bias can oppose a concept. The constraint is basis-dependent (CLIP's
    coordinates have no meaning of their own); it is an ablation knob, off by default (the
    paper's surrogate is unconstrained and its explanations show negative weights).

    It is kept by **projection** (:meth:`project_`, ``W ← max(W, 0)``), not by a
    reparametrisation such as ``W = softplus(V)``: projected gradient steps reach exact zeros
    (a concept that does not help gets weight 0, which is what a reader wants), gradients never
    vanish for small weights, the stored parameter *is* ``W`` (checkpoints, :meth:`explain` and
    :func:`~lico_lightning.functional.concept_contributions` read it as is) and the module
    stays a plain ``nn.Linear``. The price: whoever steps an optimizer on these parameters calls
    :meth:`project_` after every step (:class:`~lico_lightning.modules.SurrogateDistiller`
    does, in ``optimizer_step``); the constructor projects the initial weights.

    Args:
        num_concepts: C, the vocabulary size.
        embed_dim: K, CLIP's embedding width.
        hidden_dim: ``None`` for the linear surrogate (explainable exactly); an int adds a
            hidden GELU layer (no exact decomposition, :meth:`explain` refuses it).
        bias: learn :math:`b`.
        nonnegative: constrain the concept weights to :math:`W \ge 0` (see above).

    Example:
        >>> f = ConceptSurrogate(num_concepts=3, embed_dim=4)
        >>> f(torch.rand(2, 3)).shape
        torch.Size([2, 4])
        >>> g = ConceptSurrogate(3, 4, nonnegative=True)
        >>> bool((g.concept_weight >= 0).all())
        True
    """

    def __init__(
        self,
        num_concepts: int,
        embed_dim: int,
        hidden_dim: int | None = None,
        bias: bool = True,
        nonnegative: bool = False,
    ) -> None:
        super().__init__()
        self.num_concepts = check_int("num_concepts", num_concepts, 1)
        check_int("embed_dim", embed_dim, 1)
        if not isinstance(nonnegative, bool):
            raise TypeError(f"Expected `nonnegative` to be a bool, but got {nonnegative!r}.")
        self.nonnegative = nonnegative
        if hidden_dim is None:
            self.net: nn.Module = nn.Linear(num_concepts, embed_dim, bias=bias)
        else:
            check_int("hidden_dim", hidden_dim, 1)
            self.net = nn.Sequential(
                nn.Linear(num_concepts, hidden_dim, bias=bias),
                nn.GELU(),
                nn.Linear(hidden_dim, embed_dim, bias=bias),
            )
        if nonnegative:
            with torch.no_grad():  # start inside the feasible set: |W| keeps the init's scale
                self.concept_weight.abs_()

    @property
    def concept_weight(self) -> Tensor:
        """The weight applied to the concept scores: ``(K, C)`` (linear) or ``(hidden, C)``."""
        first = self.net if isinstance(self.net, nn.Linear) else self.net.get_submodule("0")
        return cast(nn.Linear, first).weight

    @torch.no_grad()
    def project_(self) -> ConceptSurrogate:
        """Restore the constraint after an optimizer step: ``W ← max(W, 0)`` (in place; a
        no-op without ``nonnegative``). Returns ``self``."""
        if self.nonnegative:
            self.concept_weight.clamp_(min=0.0)
        return self

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
        """``(B, C)`` concept scores → ``(B, K)`` surrogate embeddings (not normalised).

        NaN / Inf scores raise before the layer runs (one host synchronisation): one NaN score
        would otherwise turn the embedding, the loss and, a step later, the weights into NaN.
        """
        return self.net(check_finite("concepts", self.check_concepts(concepts)))

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
