"""Shared plumbing of the factorised interaction explainers (integrated Jacobians, ITSM).

Each method computes, per input, a factor ``U`` of shape ``(T, K)`` (tokens × embedding dims);
the interaction matrix of a pair is ``scale · U_a U_bᵀ`` (``functional.token_interactions``).
This module parses the inputs (caption–image, caption–caption, image–image; matched pairs or
all pairs), runs the per-side factor computation inside the safety context (eval mode restored,
hooks removed, no parameter gradients, works under ``torch.inference_mode``), and assembles an
:class:`~lico_lightning.explain.InteractionAttribution`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lico_lightning._safety import explanation_mode
from lico_lightning._validation import check_bool, check_int
from lico_lightning.explain._pair.base import PairExplainer
from lico_lightning.explain._pair.dual_encoder import DualEncoder
from lico_lightning.explain._pair.interaction import InteractionAttribution, TokenLayout
from lico_lightning.functional.interaction import token_interactions

Modality = Literal["image", "text"]


@dataclass
class SideFactors:
    """What a method returns for the inputs of one side."""

    factors: Tensor  # (B, T, K)
    embeddings: Tensor  # (B, K) the model's embeddings of the inputs
    reference_embeddings: Tensor | None  # (B, K) embeddings of the references, or None


class FactorizedInteractionExplainer(PairExplainer):
    """Base class: ``attribute`` for caption–image, caption–caption and image–image pairs."""

    method: str = "interaction"

    def __init__(self, encoder: DualEncoder | nn.Module) -> None:
        super().__init__(encoder)

    @abstractmethod
    def _side_factors(self, modality: Modality, inputs: Tensor) -> SideFactors:
        """Per-token factors of one side's inputs (called inside the safety context)."""

    #: Block of each tower the method reads (negative counts from the end); set by
    #: :meth:`_set_layers` in subclasses that read hidden layers.
    image_layer: int | None = None
    text_layer: int | None = None

    def _set_layers(self, image_layer: int, text_layer: int) -> None:
        for name, value in (("image_layer", image_layer), ("text_layer", text_layer)):
            check_int(name, value, -(2**31))  # range checked against the tower in _check_side
        self.image_layer = image_layer
        self.text_layer = text_layer

    def _layer_of(self, modality: Modality) -> int:
        layer = self.image_layer if modality == "image" else self.text_layer
        assert layer is not None  # set by _set_layers
        return layer

    def _check_side(self, modality: Modality) -> None:
        """Validate the layer choice for a modality before any work (raise early)."""
        if self.image_layer is not None:  # a method that reads hidden layers
            self.encoder.layer(modality, self._layer_of(modality))  # raises listing what exists

    def attribute(
        self,
        images: Tensor | None = None,
        texts: Tensor | Sequence[str] | None = None,
        *,
        images_b: Tensor | None = None,
        texts_b: Tensor | Sequence[str] | None = None,
        all_pairs: bool = False,
    ) -> InteractionAttribution:
        """Explain the similarity of input pairs by token × token interactions.

        Give exactly two inputs: ``images`` and ``texts`` (caption–image; side ``a`` = caption,
        side ``b`` = image), ``texts`` and ``texts_b`` (caption–caption), or ``images`` and
        ``images_b`` (image–image).

        Args:
            images: ``(B, C, H, W)`` normalised images.
            texts: ``(B, S)`` token ids or a list of B captions.
            images_b: second images for image–image pairs.
            texts_b: second captions for caption–caption pairs.
            all_pairs: explain every pair ``(a_i, b_j)`` (``Ba × Bb`` results from
                ``Ba + Bb`` per-input computations and one matrix product) instead of the
                matched pairs ``(a_i, b_i)``.

        Returns:
            :class:`~lico_lightning.explain.InteractionAttribution`.
        """
        given = {
            "images": images is not None,
            "texts": texts is not None,
            "images_b": images_b is not None,
            "texts_b": texts_b is not None,
        }
        combos: dict[tuple[str, ...], tuple[Modality, Modality]] = {
            ("images", "texts"): ("text", "image"),
            ("texts", "texts_b"): ("text", "text"),
            ("images", "images_b"): ("image", "image"),
        }
        key = tuple(k for k, v in given.items() if v)
        if key not in combos:
            raise ValueError(
                "Expected exactly one of the input combinations (images, texts), "
                f"(texts, texts_b) or (images, images_b), but got {list(key)}."
            )
        check_bool("all_pairs", all_pairs)
        mod_a, mod_b = combos[key]
        named = {"images": images, "texts": texts, "images_b": images_b, "texts_b": texts_b}
        # caption–image: side a is the caption so the result reads (B, S, Hp, Wp)
        name_a, name_b = ("texts", "images") if key == ("images", "texts") else key
        inp_a = self._prepare(mod_a, named[name_a], name_a)
        inp_b = self._prepare(mod_b, named[name_b], name_b)
        if not all_pairs and inp_a.shape[0] != inp_b.shape[0]:
            raise ValueError(
                f"Expected `{name_a}` and `{name_b}` with the same batch size, but got "
                f"{inp_a.shape[0]} and {inp_b.shape[0]} (use all_pairs=True for all pairs)."
            )
        self._check_side(mod_a)
        self._check_side(mod_b)

        enc = self.encoder
        with ExitStack() as stack:
            stack.enter_context(explanation_mode())
            stack.enter_context(enc.explaining())
            inp_a, inp_b = inp_a.clone(), inp_b.clone()  # leave inference mode behind
            if mod_a == mod_b and inp_a.shape[1:] == inp_b.shape[1:]:
                both = self._side_factors(mod_a, torch.cat([inp_a, inp_b]))
                fa, fb = _split(both, inp_a.shape[0])
            else:
                fa = self._side_factors(mod_a, inp_a)
                fb = self._side_factors(mod_b, inp_b)
            scale = enc.logit_scale.detach()
            matrix = token_interactions(fa.factors, fb.factors, scale, all_pairs=all_pairs)

            def sim(x: Tensor, y: Tensor) -> Tensor:
                return enc.similarity(x, y, all_pairs=all_pairs).detach()

            score = sim(fa.embeddings, fb.embeddings)
            refs = None
            if fa.reference_embeddings is not None and fb.reference_embeddings is not None:
                refs = torch.stack(
                    [
                        sim(fa.reference_embeddings, fb.embeddings),
                        sim(fa.embeddings, fb.reference_embeddings),
                        sim(fa.reference_embeddings, fb.reference_embeddings),
                    ],
                    -1,
                )
        return InteractionAttribution(
            matrix=matrix,
            layout_a=self._layout(mod_a, fa.factors.shape[1]),
            layout_b=self._layout(mod_b, fb.factors.shape[1]),
            score=score,
            reference_scores=refs,
            method=self.method,
            tokens_a=inp_a if mod_a == "text" else None,
            tokens_b=inp_b if mod_b == "text" else None,
            eot_a=enc.eot_positions(inp_a) if mod_a == "text" else None,
            eot_b=enc.eot_positions(inp_b) if mod_b == "text" else None,
        )

    # ---------------------------------------------------------------- helpers
    def _prepare(self, modality: Modality, x: Tensor | Sequence[str] | None, name: str) -> Tensor:
        enc = self.encoder
        if x is None:  # excluded by the input combinations of `attribute`
            raise TypeError(f"Expected `{name}` to be given, but got None.")
        if modality == "text":
            tokens = enc.as_tokens(x, name)
            enc.eot_positions(tokens)  # every caption needs an EOT
            return tokens
        return self._check_images(x, name)

    def _layout(self, modality: Modality, num_tokens: int) -> TokenLayout:
        if modality == "text":
            return TokenLayout("text", num_tokens)
        spec = self.encoder.image_spec
        num_patches = spec.num_patches  # None exactly when grid_size is None
        if num_patches is None or num_patches + spec.num_prefix_tokens != num_tokens:
            raise ValueError(
                f"Expected {spec.num_prefix_tokens} prefix + {spec.num_patches} patch tokens in "
                f"the image tower, but got {num_tokens} tokens."
            )
        return TokenLayout(
            "image",
            num_tokens,
            num_prefix_tokens=spec.num_prefix_tokens,
            grid_size=spec.grid_size,
            image_size=spec.image_size,
        )

    def _run(self, modality: Modality, inputs: Tensor) -> Tensor:
        enc = self.encoder
        return enc.encode_image(inputs) if modality == "image" else enc.encode_text(inputs)

    def _unit(self, embeddings: Tensor) -> Tensor:
        """Embeddings as the score sees them: L2-normalised for cosine encoders."""
        return F.normalize(embeddings, dim=-1) if self.encoder.normalize_embeddings else embeddings

    def _text_valid(self, tokens: Tensor) -> Tensor:
        """``(B, S)`` bool, positions up to and including EOT."""
        return self.encoder.caption_masks(tokens)[0]


def _split(f: SideFactors, n: int) -> tuple[SideFactors, SideFactors]:
    ref = f.reference_embeddings
    return (
        SideFactors(f.factors[:n], f.embeddings[:n], None if ref is None else ref[:n]),
        SideFactors(f.factors[n:], f.embeddings[n:], None if ref is None else ref[n:]),
    )
