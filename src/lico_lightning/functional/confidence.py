r"""Confidence metrics: how a score changes when the model sees only the explained part.

* Classifier saliency (Grad-CAM++, Chattopadhyay et al. 2018): :func:`average_drop` and
  :func:`increase_in_confidence` run the classifier on the explanation map
  :math:`E = x \odot \hat s` and compare softmax probabilities of the explained class.
* Dual-encoder grounding (M2IB, eqs. 17–18): :func:`pair_confidence_drop` and
  :func:`pair_confidence_increase` compare given image–text scores (cosine similarities) of
  the original and the distilled pairs.

The increase is the same indicator in both; the drop differs: Grad-CAM++'s is relative to the
clean probability, M2IB's is absolute because cosine similarities can be 0 or negative.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from lico_lightning._validation import (
    check_choice,
    check_finite,
    check_logits,
    check_target,
    check_target_range,
    check_tensor,
)

__all__ = [
    "average_drop",
    "check_images_saliency",
    "increase_in_confidence",
    "normalize_saliency",
    "pair_confidence_drop",
    "pair_confidence_increase",
    "target_probability",
]

Model = Callable[[Tensor], Tensor]
Reduction = Literal["mean", "none"]


def check_images_saliency(images: Tensor, saliency: Tensor) -> None:
    """Raise unless ``images`` ``(B, C, H, W)`` and ``saliency`` ``(B, H, W)`` are finite
    floating-point tensors of matching shapes."""
    check_tensor("images", images, 4, floating=True)
    check_tensor("saliency", saliency, 3, floating=True)
    if saliency.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            "Expected `saliency` of shape (B, H, W) = "
            f"{(images.shape[0], *images.shape[2:])} matching `images` {tuple(images.shape)}, "
            f"but got {tuple(saliency.shape)}."
        )
    check_finite("images", images)
    check_finite("saliency", saliency)


def normalize_saliency(saliency: Tensor) -> Tensor:
    r"""Min-max normalise each map to ``[0, 1]``; a constant map becomes all zeros.

    .. math::
        \hat s = \frac{s - \min s}{\max s - \min s}

    Args:
        saliency: ``(B, H, W)`` (or ``(B, *)``) finite maps (NaN / Inf raise ``ValueError``:
            a NaN map has no ranking, and mapping it to zeros would hide the fault).

    Returns:
        Tensor of the same shape with values in ``[0, 1]``.

    Example:
        >>> normalize_saliency(torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]]))
        tensor([[[0., 1.]],
        <BLANKLINE>
                [[0., 0.]]])
    """
    check_tensor("saliency", saliency, floating=True)
    check_finite("saliency", saliency)
    flat = saliency.flatten(1)
    lo = flat.amin(1, keepdim=True)
    span = flat.amax(1, keepdim=True) - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny), 0.0)
    return out.view_as(saliency)


def target_probability(logits: Tensor, target: Tensor) -> Tensor:
    r"""Softmax probability of each row's ``target`` class, :math:`\mathrm{softmax}(z_b)_{t_b}`,
    in float32 (no checks: call it in loops after checking ``target`` once).

    Args:
        logits: ``(B, num_classes)``.
        target: ``(B,)`` long.

    Returns:
        ``(B,)``.

    Example:
        >>> target_probability(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1]))
        tensor([0.5000, 0.1192])
    """
    return logits.float().softmax(-1).gather(1, target[:, None]).squeeze(1)


def _model_probability(model: Model, x: Tensor, target: Tensor) -> Tensor:
    logits = check_logits(model(x), x.shape[0])
    check_target_range(target, logits.shape[1])
    return target_probability(logits, target)


def _confidence_change(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    target: Tensor,
    clean_probability: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """``(drop (B,), increase (B,) bool)`` of the target probability on the explanation map."""
    check_images_saliency(images, saliency)
    check_target(target, images.shape[0])
    if clean_probability is not None:
        shape = (images.shape[0],)
        check_tensor("clean_probability", clean_probability, ndim=1, floating=True, shape=shape)
        check_finite("clean_probability", clean_probability)
    with torch.no_grad():
        explanation = images * normalize_saliency(saliency).unsqueeze(1).to(images)
        if clean_probability is None:
            probs = _model_probability(model, torch.cat([images, explanation]), target.repeat(2))
            y, o = probs.chunk(2)
        else:
            y, o = clean_probability.float(), _model_probability(model, explanation, target)
    return _score_change(y, o, relative=True)


def _score_change(original: Tensor, explained: Tensor, *, relative: bool) -> tuple[Tensor, Tensor]:
    drop = (original - explained).clamp_min(0)
    if relative:
        drop = drop / original.clamp_min(torch.finfo(original.dtype).tiny)
    return drop, original < explained


def _reduce(values: Tensor, reduction: Reduction) -> Tensor:
    return values.mean() if reduction == "mean" else values


def average_drop(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    target: Tensor,
    reduction: Reduction = "mean",
    clean_probability: Tensor | None = None,
) -> Tensor:
    r"""Average drop in confidence (Grad-CAM++; lower is better), as a fraction (×100 for the
    papers' %).

    The explanation map is the image multiplied by the min-max normalised saliency,
    :math:`E = x \odot \hat s`; with :math:`Y = p_c(x)` and :math:`O = p_c(E)` (softmax
    probabilities of the target)

    .. math::
        \text{AD} = \frac1B \sum_b \frac{\max(0, Y_b - O_b)}{Y_b}

    Relative to :math:`Y`, unlike M2IB's absolute :func:`pair_confidence_drop` on similarity
    scores.

    Args:
        model: callable ``(B, C, H, W) -> (B, num_classes)`` logits, called under ``no_grad``
            (finite logits expected).
        images: ``(B, C, H, W)`` finite.
        saliency: ``(B, H, W)`` finite.
        target: ``(B,)`` long.
        reduction: ``"mean"`` or ``"none"`` (``(B,)``).
        clean_probability: ``(B,)`` :math:`Y` when the caller already has it (e.g. from the
            forward pass that chose the target); then only the explanation maps are run.

    Returns:
        A scalar, or ``(B,)`` in ``[0, 1]``.

    Example:
        >>> model = lambda x: torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)
        >>> sal = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
        >>> average_drop(model, torch.ones(1, 1, 2, 2), sal, torch.tensor([0]))
        tensor(0.0718)
    """
    check_choice("reduction", reduction, ["mean", "none"])
    drop, _ = _confidence_change(model, images, saliency, target, clean_probability)
    return _reduce(drop, reduction)


def increase_in_confidence(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    target: Tensor,
    reduction: Reduction = "mean",
    clean_probability: Tensor | None = None,
) -> Tensor:
    r"""Share of samples whose target confidence rises on the explanation map (Grad-CAM++;
    higher is better).

    .. math::
        \text{IC} = \frac1B \sum_b \mathbb{1}[Y_b < O_b]

    with :math:`Y`, :math:`O` as in :func:`average_drop` (the classifier is run on the
    explanation map); :func:`pair_confidence_increase` is the same indicator on given scores.

    Args: as :func:`average_drop`.

    Returns:
        A scalar, or ``(B,)`` indicators as float.

    Example:
        >>> model = lambda x: torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)
        >>> sal = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
        >>> increase_in_confidence(model, torch.ones(2, 1, 2, 2), sal, torch.tensor([0, 1]),
        ...     reduction="none")
        tensor([0., 1.])
    """
    check_choice("reduction", reduction, ["mean", "none"])
    _, increase = _confidence_change(model, images, saliency, target, clean_probability)
    return _reduce(increase.float(), reduction)


def pair_confidence_drop(
    original: Tensor, distilled: Tensor, reduction: Reduction = "mean"
) -> Tensor:
    r"""Confidence drop of image–text pairs (M2IB eq. 17): mean decrease of the score when one
    input keeps only its attributed part.

    .. math::
        \mathrm{drop} = \frac{1}{B} \sum_i \max(0, o_i - s_i)

    Not divided by the original score (unlike the classifier's :func:`average_drop`): the
    scores are cosine similarities, possibly <= 0, not probabilities.

    Args:
        original: ``(B,)`` finite scores (M2IB: cosine similarity) of the original pairs.
        distilled: ``(B,)`` finite scores when one input keeps only its attributed part.
        reduction: ``"mean"`` or ``"none"`` (``(B,)`` per-pair drops).

    Returns:
        A scalar, or ``(B,)``.

    Example:
        >>> pair_confidence_drop(torch.tensor([0.3, 0.2]), torch.tensor([0.1, 0.4]))
        tensor(0.1000)
    """
    check_choice("reduction", reduction, ("mean", "none"))
    _check_pair(original, distilled)
    drop, _ = _score_change(original, distilled, relative=False)
    return _reduce(drop, reduction)


def pair_confidence_increase(
    original: Tensor, distilled: Tensor, reduction: Reduction = "mean"
) -> Tensor:
    r"""Confidence increase of image–text pairs (M2IB eq. 18): share of pairs whose score grows
    when one input keeps only its attributed part.

    .. math::
        \mathrm{increase} = \frac{1}{B} \sum_i [o_i < s_i]

    The indicator of the classifier's :func:`increase_in_confidence`, on given scores.

    Args:
        original: ``(B,)`` finite scores of the original pairs.
        distilled: ``(B,)`` finite scores of the distilled pairs.
        reduction: ``"mean"`` or ``"none"`` (``(B,)`` indicators as float).

    Returns:
        A scalar, or ``(B,)``.

    Example:
        >>> pair_confidence_increase(torch.tensor([0.3, 0.2]), torch.tensor([0.1, 0.4]))
        tensor(0.5000)
    """
    check_choice("reduction", reduction, ("mean", "none"))
    _check_pair(original, distilled)
    _, up = _score_change(original, distilled, relative=False)
    return _reduce(up.to(original.dtype), reduction)


def _check_pair(original: Tensor, distilled: Tensor) -> None:
    check_tensor("original", original, ndim=1, floating=True)
    check_tensor("distilled", distilled, ndim=1, floating=True)
    if original.shape != distilled.shape:
        raise ValueError(
            f"Expected `original` and `distilled` of equal shape, but got "
            f"{tuple(original.shape)} and {tuple(distilled.shape)}."
        )
    check_finite("original", original)
    check_finite("distilled", distilled)
