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

from lico_lightning._validation import check_choice, check_tensor
from lico_lightning.functional import box_to_mask
from lico_lightning.functional.cam import _resize_maps

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
class InteractionAttribution:
    """Interactions between the tokens of two inputs ``a`` and ``b`` of a dual encoder.

    For image–text pairs side ``a`` is the caption and side ``b`` the image, so
    :attr:`interactions` is ``(B, S, Hp, Wp)``. Text–text gives ``(B, S, S)``, image–image
    ``(B, Hp, Wp, Hp, Wp)``. With ``all_pairs`` every ``a`` is paired with every ``b`` and the
    batch part of every shape is ``(Ba, Bb)`` instead of ``(B,)``.

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
    """

    matrix: Tensor
    layout_a: TokenLayout
    layout_b: TokenLayout
    score: Tensor
    reference_scores: Tensor | None
    method: str
    tokens_a: Tensor | None = None
    tokens_b: Tensor | None = None

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
                side.
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
        spans = self._check_spans(span, n_inputs, layout.num_tokens)
        pos = torch.arange(layout.num_tokens, device=self.matrix.device)
        spans = spans.to(pos.device)
        weights = (pos[None] >= spans[:, :1]) & (pos[None] < spans[:, 1:])
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
        check_tensor("boxes", boxes, ndim=2)
        n_inputs = self._side_batch(side)
        if boxes.shape[0] != n_inputs:
            raise ValueError(
                f"Expected one box per input of side {side!r} ({n_inputs}), but got "
                f"{boxes.shape[0]}."
            )
        cells = box_to_mask(boxes.to(self.matrix.device), layout.grid_size, layout.image_size)
        prefix = torch.zeros(n_inputs, layout.num_prefix_tokens, device=self.matrix.device)
        weights = torch.cat([prefix, cells.flatten(1).to(prefix.dtype)], 1)
        return self._project(side, weights.to(self.matrix.dtype))

    def upsample(self, maps: Tensor, mode: str = "bilinear") -> Tensor:
        """Upsample patch maps ``(..., Hp, Wp)`` to the image size ``(..., H, W)``."""
        layout = self.layout_b if self.layout_b.modality == "image" else self.layout_a
        if layout.modality != "image" or layout.image_size is None:
            raise ValueError("Expected a result with an image side to upsample, but got none.")
        check_tensor("maps", maps, floating=True)
        if maps.ndim < 2:
            raise ValueError(
                f"Expected `maps` of shape (..., Hp, Wp), but got {tuple(maps.shape)}."
            )
        return _resize_maps(maps, layout.image_size, mode)

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

    @staticmethod
    def _check_spans(span: tuple[int, int] | Tensor, n_inputs: int, length: int) -> Tensor:
        if isinstance(span, Tensor):
            if span.ndim != 2 or span.shape != (n_inputs, 2) or span.is_floating_point():
                raise ValueError(
                    f"Expected `span` as (start, end) or an integer tensor of shape "
                    f"({n_inputs}, 2), but got {span.dtype} {tuple(span.shape)}."
                )
            spans = span.long()
        else:
            if (
                not isinstance(span, (tuple, list))
                or len(span) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) for s in span)
            ):
                raise ValueError(f"Expected `span` as (start, end) ints, but got {span!r}.")
            spans = torch.tensor([list(span)] * n_inputs, dtype=torch.long)
        start, end = spans[:, 0], spans[:, 1]
        bad = (start < 0) | (end > length) | (start >= end)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"Expected token spans with 0 <= start < end <= {length}, but got "
                f"{spans[i].tolist()} for input {i}."
            )
        return spans
