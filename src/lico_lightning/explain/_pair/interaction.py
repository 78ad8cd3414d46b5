"""The result of every token × patch (or token × token, patch × patch) interaction explainer.

:class:`InteractionAttribution` holds one interaction matrix per explained pair, the model's
score and (for methods with a completeness property) the reference terms of

.. math::
    s(a, b) - s(r_a, b) - s(a, r_b) + s(r_a, r_b) \\approx \\sum_{i,j} A_{ij},

plus the helpers the papers use to read it: project a caption span onto the image, a box onto
the caption, and upsample patch maps to pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lico_lightning._validation import check_choice
from lico_lightning.explain._pair.base import (
    PairAttribution,
    box_cells,
    check_token_spans,
    span_weights,
)

__all__ = ["InteractionAttribution", "TokenLayout"]

Side = Literal["a", "b"]


@dataclass(frozen=True)
class TokenLayout:
    """How one side's tokens map to its input.

    Attributes:
        modality: ``"image"`` or ``"text"``.
        num_tokens: T, the tokens of this side in :attr:`InteractionAttribution.matrix`
            (image: prefix + patches; text: the full context length S).
        num_prefix_tokens: image tokens before the patches (class token); 0 for text.
        grid_size: ``(Hp, Wp)`` patch grid (image only).
        image_size: ``(H, W)`` input size in pixels (image only).
    """

    modality: Literal["image", "text"]
    num_tokens: int
    num_prefix_tokens: int = 0
    grid_size: tuple[int, int] | None = None
    image_size: tuple[int, int] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of this side in :attr:`InteractionAttribution.interactions`."""
        if self.modality == "image":
            if self.grid_size is None:
                raise ValueError("Expected an image layout with a patch grid, but got none.")
            return self.grid_size
        return (self.num_tokens,)


@dataclass
class InteractionAttribution(PairAttribution):
    """Interactions between the tokens of two inputs ``a`` and ``b`` of a dual encoder.

    For image–text pairs side ``a`` is the caption and side ``b`` the image, so
    :attr:`interactions` is ``(B, S, Hp, Wp)``. Text–text gives ``(B, S, S)``, image–image
    ``(B, Hp, Wp, Hp, Wp)``. With ``all_pairs`` every ``a`` is paired with every ``b`` and the
    batch part of every shape is ``(Ba, Bb)`` instead of ``(B,)``.

    Common views (:class:`~lico_lightning.explain.PairAttribution`, caption–image results;
    with ``all_pairs`` every ``(B, ...)`` below reads ``(Ba, Bb, ...)``):

    * :meth:`span_map` — the interactions of the span's tokens with each patch, summed over
      the span: the image map *of that phrase* (:meth:`project_span`);
    * :meth:`image_map` — summed over every caption token (SOT and EOT included, the rows
      that carry most of the score): :meth:`marginal` ``("b")``;
    * :meth:`box_scores` — each token's interactions with the patches in the box
      (:meth:`project_box`); :meth:`token_scores` — with every patch (:meth:`marginal`
      ``("a")``).

    Attributes:
        matrix: ``(*batch, Ta, Tb)`` interactions of all tokens, image prefix tokens included
            (its sum is what completeness is about).
        layout_a: token layout of side ``a``.
        layout_b: token layout of side ``b``.
        score: ``(*batch,)`` the model's score ``s(a, b)`` (logit scale · cosine + bias).
        reference_scores: ``(*batch, 3)`` ``s(r_a, b), s(a, r_b), s(r_a, r_b)`` — the reference
            terms of eq. 2 — or ``None`` for methods without completeness (ITSM).
        method: name of the method that produced it.
        tokens_a: ``(Ba, S)`` token ids if side ``a`` is text, else ``None``.
        tokens_b: ``(Bb, S)`` token ids if side ``b`` is text, else ``None``.
        eot_a: ``(Ba,)`` EOT position of every caption of side ``a`` (text), else ``None``;
            token spans must lie in ``[1, eot)`` (SOT, EOT and padding are rejected).
        eot_b: the same for side ``b``.
    """

    matrix: Tensor
    layout_a: TokenLayout
    layout_b: TokenLayout
    score: Tensor
    reference_scores: Tensor | None
    method: str
    tokens_a: Tensor | None = None
    tokens_b: Tensor | None = None
    eot_a: Tensor | None = None
    eot_b: Tensor | None = None

    # ------------------------------------------------------------ common views
    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of the image side (side ``b`` if both are images), else ``None``."""
        layout = self.layout_b if self.layout_b.modality == "image" else self.layout_a
        return layout.image_size if layout.modality == "image" else None

    @property
    def views(self) -> frozenset[str]:
        """All common views for caption–image results; none for caption–caption or
        image–image results (use :meth:`project_span` / :meth:`project_box` there)."""
        if self.layout_a.modality == "text" and self.layout_b.modality == "image":
            return frozenset({"span_map", "image_map", "box_scores", "token_scores"})
        return frozenset()

    def span_map(self, span: tuple[int, int] | Tensor) -> Tensor:
        """``(*batch, Hp, Wp)`` image map of the caption tokens ``span`` (:meth:`project_span`)."""
        self._require_caption_image("span_map")
        return self.project_span(span, "a")

    def image_map(self) -> Tensor:
        """``(*batch, Hp, Wp)`` image map of the whole caption (:meth:`marginal` ``("b")``)."""
        self._require_caption_image("image_map")
        return self.marginal("b")

    def box_scores(self, boxes: Tensor) -> Tensor:
        """``(*batch, S)`` interactions of every caption token with the patches in ``boxes``
        ``(Bb, 4)`` (:meth:`project_box`)."""
        self._require_caption_image("box_scores")
        return self.project_box(boxes, "b")

    def token_scores(self) -> Tensor:
        """``(*batch, S)`` every caption token's interactions with the whole image."""
        self._require_caption_image("token_scores")
        return self.marginal("a")

    def _require_caption_image(self, view: str) -> None:
        if view not in self.views:
            raise self._missing(view)

    def _why_not(self, view: str) -> str:
        return (
            f": it explains a {self.layout_a.modality}–{self.layout_b.modality} pair; use "
            "project_span / project_box / marginal with the side."
        )

    # ------------------------------------------------------------------ views
    @property
    def batch_shape(self) -> tuple[int, ...]:
        """``(B,)``, or ``(Ba, Bb)`` for all pairs."""
        return tuple(self.matrix.shape[:-2])

    @property
    def interactions(self) -> Tensor:
        """Interactions without image prefix tokens, each side in its natural shape.

        ``(*batch, S, Hp, Wp)`` for caption–image, ``(*batch, S, S)`` for caption–caption and
        ``(*batch, Hp, Wp, Hp, Wp)`` for image–image.
        """
        m = self.matrix[..., self.layout_a.num_prefix_tokens :, :]
        m = m[..., self.layout_b.num_prefix_tokens :]
        return m.reshape(*self.batch_shape, *self.layout_a.shape, *self.layout_b.shape)

    def completeness_residual(self) -> Tensor:
        """``s(a, b) - (sum A + s(r_a, b) + s(a, r_b) - s(r_a, r_b))``, ``(*batch,)``.

        Zero up to the integration error for integrated Jacobians (eq. 2 = eq. 10).
        """
        if self.reference_scores is None:
            raise ValueError(f"Expected a method with reference terms, but {self.method} has none.")
        ref = self.reference_scores
        total = self.matrix.sum((-1, -2)) + ref[..., 0] + ref[..., 1] - ref[..., 2]
        return self.score - total

    # ------------------------------------------------------------ projections
    def marginal(self, side: Side) -> Tensor:
        """Attribution of each token of ``side`` given the whole other input.

        Sums the interactions over all tokens of the other side (its prefix tokens included):
        ``marginal("b")`` of a caption–image result is the ``(*batch, Hp, Wp)`` image map for
        the whole caption, ``marginal("a")`` the ``(*batch, S)`` caption attribution for the
        whole image (the inputs of conditional insertion / deletion).
        """
        check_choice("side", side, ("a", "b"))
        other: Side = "b" if side == "a" else "a"
        layout = self._layout(other)
        weights = torch.ones(
            self._side_batch(other),
            layout.num_tokens,
            dtype=self.matrix.dtype,
            device=self.matrix.device,
        )
        return self._project(other, weights)

    def project_span(self, span: tuple[int, int] | Tensor, side: Side = "a") -> Tensor:
        """Sum the interactions of a caption token span, leaving the other side.

        Args:
            span: ``(start, end)`` token positions, end exclusive (position 0 is SOT), for
                every pair, or a ``(B_side, 2)`` long tensor with one span per input of that
                side. Must lie inside each caption, ``1 <= start < end <= eot``: a span over
                SOT, EOT or padding raises ``ValueError`` (it would give an empty or
                misleading map).
            side: which side holds the caption (``"a"`` for caption–image results).

        Returns:
            The other side in its natural shape: ``(*batch, Hp, Wp)`` for an image, ``(*batch,
            S)`` for a caption.
        """
        check_choice("side", side, ("a", "b"))
        layout = self._layout(side)
        if layout.modality != "text":
            raise ValueError(
                f"Expected side {side!r} to be a caption for a token span, but it is an image."
            )
        n_inputs = self._side_batch(side)
        eot = self.eot_a if side == "a" else self.eot_b
        if eot is None:  # no caption ends known: any span inside the sequence
            eot = torch.full((n_inputs,), layout.num_tokens - 1, dtype=torch.long)
        spans = check_token_spans(span, eot.to(self.matrix.device))
        weights = span_weights(spans, layout.num_tokens, self.matrix.dtype)
        return self._project(side, weights.to(self.matrix.dtype))

    def project_box(self, boxes: Tensor, side: Side = "b") -> Tensor:
        """Sum the interactions of the patches inside a box, leaving the other side.

        Args:
            boxes: ``(B_side, 4)`` boxes ``(x1, y1, x2, y2)`` in pixels of the image (one per
                input of that side); a patch counts when its centre is in the box.
            side: which side holds the image (``"b"`` for caption–image results).

        Returns:
            ``(*batch, S)`` for the caption of a caption–image pair, ``(*batch, Hp, Wp)`` for
            image–image.
        """
        check_choice("side", side, ("a", "b"))
        layout = self._layout(side)
        if layout.modality != "image" or layout.grid_size is None:
            raise ValueError(
                f"Expected side {side!r} to be an image with a patch grid for a box, but it is "
                f"a {layout.modality}."
            )
        n_inputs = self._side_batch(side)
        if layout.image_size is None:
            raise ValueError(f"Expected the image size of side {side!r} for a box, but got none.")
        cells = box_cells(boxes, n_inputs, layout.grid_size, layout.image_size)
        cells = cells.to(self.matrix.device)
        prefix = torch.zeros(n_inputs, layout.num_prefix_tokens, device=self.matrix.device)
        weights = torch.cat([prefix, cells.flatten(1).to(prefix.dtype)], 1)
        return self._project(side, weights.to(self.matrix.dtype))

    # ---------------------------------------------------------------- helpers
    def _layout(self, side: Side) -> TokenLayout:
        return self.layout_a if side == "a" else self.layout_b

    def _side_batch(self, side: Side) -> int:
        shape = self.batch_shape
        if len(shape) == 1:
            return shape[0]
        return shape[0] if side == "a" else shape[1]

    def _project(self, side: Side, weights: Tensor) -> Tensor:
        """Contract ``weights`` ``(B_side, T_side)`` with the matrix, reshape the other side."""
        all_pairs = len(self.batch_shape) == 2
        if side == "a":
            eq = "ijst,is->ijt" if all_pairs else "bst,bs->bt"
            out = torch.einsum(eq, self.matrix, weights)
            other = self.layout_b
        else:
            eq = "ijst,jt->ijs" if all_pairs else "bst,bt->bs"
            out = torch.einsum(eq, self.matrix, weights)
            other = self.layout_a
        out = out[..., other.num_prefix_tokens :]
        return out.reshape(*self.batch_shape, *other.shape)
