"""Conditional insertion / deletion curves of a dual encoder (CID, CII, CTD, CTI).

Second-order attributions paper §4.1 (after Sammani et al. 2023): the features of *one* input
are removed (deletion) or inserted (insertion) in the order of their attribution, while the
other input stays unchanged, and the model's score is recorded after every step. Image patches
are removed by setting them to zero in normalised space (the mean colour); caption tokens are
removed from attention (SOT and EOT always stay). The areas under these curves
(:func:`lico_lightning.functional.curve_auc`, or the metrics
``ConditionalDeletionAUC`` / ``ConditionalInsertionAUC``) are CID / CII for images and CTD /
CTI for captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Literal

import torch
from torch import Tensor, nn

from lico_lightning._safety import explanation_mode
from lico_lightning._validation import check_choice, check_finite, check_int, check_tensor
from lico_lightning.explain import DualEncoder, as_dual_encoder
from lico_lightning.functional import perturbation_keep_masks

__all__ = ["conditional_perturbation_curves"]


def conditional_perturbation_curves(
    encoder: DualEncoder | nn.Module,
    images: Tensor,
    texts: Tensor | Sequence[str],
    attributions: Tensor,
    modality: Literal["image", "text"],
    mode: Literal["deletion", "insertion"],
    num_steps: int | None = None,
    batch_size: int = 64,
) -> Tensor:
    """Scores of image–caption pairs while one input is perturbed in attribution order.

    Args:
        encoder: the dual encoder (or an open_clip model, wrapped).
        images: ``(B, C, H, W)`` normalised images (finite).
        texts: ``(B, S)`` token ids or B captions.
        attributions: features of the perturbed input for the pair: ``(B, h, w)`` for
            ``modality="image"`` (a grid dividing the image, e.g. the patch grid; e.g.
            ``result.marginal("b")``), ``(B, S)`` for ``modality="text"`` (only tokens between
            SOT and EOT are perturbed; e.g. ``result.marginal("a")``).
        modality: which input is perturbed.
        mode: ``"deletion"`` (most attributed removed first) or ``"insertion"``.
        num_steps: perturbation steps (default: one feature per step).
        batch_size: perturbed inputs encoded per forward pass.

    Returns:
        ``(B, num_steps + 1)`` scores (logit scale · cosine + bias) after perturbing the
        fractions ``0, 1/J, …, 1`` of the features.

    Example:
        >>> from lico_lightning.testing import tiny_dual_encoder
        >>> enc = tiny_dual_encoder()
        >>> images, texts = torch.randn(2, 3, 32, 32), ["a dog", "a red car"]
        >>> curves = conditional_perturbation_curves(
        ...     enc, images, texts, torch.randn(2, 4, 4), "image", "deletion", num_steps=4
        ... )
        >>> curves.shape
        torch.Size([2, 5])
    """
    encoder = as_dual_encoder(encoder)
    check_choice("modality", modality, ("image", "text"))
    check_choice("mode", mode, ("deletion", "insertion"))
    check_int("batch_size", batch_size, 1)
    images, tokens = encoder.check_pairs(images, texts)
    check_finite("images", images)
    b = images.shape[0]
    check_tensor("attributions", attributions, floating=True)
    check_finite("attributions", attributions)
    if modality == "image":
        if attributions.ndim != 3 or attributions.shape[0] != b:
            raise ValueError(
                f"Expected image `attributions` of shape ({b}, h, w), but got "
                f"{tuple(attributions.shape)}."
            )
        grid = tuple(attributions.shape[1:])
        h, w = images.shape[-2:]
        if h % grid[0] or w % grid[1]:
            raise ValueError(
                f"Expected the image size {(h, w)} to be a multiple of the attribution grid "
                f"{grid}, but it is not."
            )
        candidates = None
        flat_scores = attributions.flatten(1)
    else:
        if attributions.shape != tokens.shape:
            raise ValueError(
                f"Expected text `attributions` of shape {tuple(tokens.shape)}, but got "
                f"{tuple(attributions.shape)}."
            )
        candidates = encoder.caption_masks(tokens)[1]
        flat_scores = attributions

    keep = perturbation_keep_masks(
        flat_scores.detach().to(torch.float32), mode, num_steps, candidates
    )  # (B, J + 1, F)
    steps = keep.shape[1]
    src = torch.arange(b, device=images.device).repeat_interleave(steps)
    keep = keep.flatten(0, 1)  # (B·(J+1), F)

    with ExitStack() as stack:
        stack.enter_context(explanation_mode())
        stack.enter_context(encoder.explaining())
        images, tokens = images.clone(), tokens.clone()
        if modality == "image":
            fixed = encoder.encode_text(tokens)
            parts = []
            for start in range(0, keep.shape[0], batch_size):
                rows = slice(start, start + batch_size)
                masked = encoder.mask_image_patches(
                    images[src[rows]],
                    keep[rows].view(-1, *attributions.shape[1:]).to(images.device),
                )
                parts.append(encoder.encode_image(masked))
            moving = torch.cat(parts)
            scores = encoder.similarity(moving, fixed[src])
        else:
            fixed = encoder.encode_image(images)
            parts = []
            for start in range(0, keep.shape[0], batch_size):
                rows = slice(start, start + batch_size)
                parts.append(encoder.encode_text(tokens[src[rows]], keep[rows].to(tokens.device)))
            moving = torch.cat(parts)
            scores = encoder.similarity(fixed[src], moving)
    return scores.view(b, steps)
