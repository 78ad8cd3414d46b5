r"""Perturbation curves and their areas: insertion / deletion for classifier saliency (RISE,
Petsiuk et al. 2018; LICO §4.3) and the feature masks of conditional insertion / deletion for
dual-encoder grounding (second-order attributions paper §4.1, after Sammani et al. 2023).

* Classifier: :func:`perturbation_curve` / :func:`insertion_deletion_curves` move pixels in
  decreasing-saliency order and score the classifier; :func:`insertion_auc`,
  :func:`deletion_auc` and :func:`insertion_deletion_auc` integrate the curves.
* Grounding: :func:`perturbation_keep_masks` says which patches or tokens are present at each
  step (the dual encoder scores them, ``lico_lightning.evaluation.conditional_perturbation_curves``)
  and :func:`curve_auc` integrates any curve.

Classifier functions take any callable ``model(images) -> logits`` and run it under
``torch.no_grad()``; they do **not** change the model's train/eval mode (the metric classes
and the monitors do, and restore it). "Zero" images are zeros of the given tensor, i.e. the
data set's mean colour for normalised inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur_image

from lico_lightning._validation import (
    check_choice,
    check_finite,
    check_int,
    check_logits,
    check_positive,
    check_real,
    check_target,
    check_target_range,
    check_tensor,
)
from lico_lightning.functional.confidence import (
    Model,
    Reduction,
    check_images_saliency,
    target_probability,
)

__all__ = [
    "DEFAULT_BLUR_KERNEL_SIZE",
    "DEFAULT_BLUR_SIGMA",
    "DEFAULT_STEP_FRACTION",
    "blur_images",
    "curve_auc",
    "deletion_auc",
    "insertion_auc",
    "insertion_deletion_auc",
    "insertion_deletion_curves",
    "perturbation_curve",
    "perturbation_keep_masks",
]

Substrate = Literal["blur", "zero"]

#: RISE's blur for insertion / deletion (kernel 11, sigma 5, at 224 px).
DEFAULT_BLUR_KERNEL_SIZE = 11
DEFAULT_BLUR_SIGMA = 5.0
#: LICO / Score-CAM step: 3.6 % of the pixels per step.
DEFAULT_STEP_FRACTION = 0.036


def _check_step_and_chunk(step_fraction: float, chunk_size: int) -> None:
    """Raise unless ``step_fraction`` lies in (0, 1] and ``chunk_size`` is a positive int."""
    check_real("step_fraction", step_fraction, low=0.0, high=1.0)
    check_int("chunk_size", chunk_size, 1)


def blur_images(
    images: Tensor,
    kernel_size: int = DEFAULT_BLUR_KERNEL_SIZE,
    sigma: float = DEFAULT_BLUR_SIGMA,
) -> Tensor:
    """Gaussian-blur a batch (reflect padding), as RISE's insertion substrate.

    The kernel is shrunk to the largest odd size the image allows (reflect padding needs
    ``kernel_size // 2 < min(H, W)``), so tiny images (e.g. 8x8 digits) work with the defaults.

    Args:
        images: ``(B, C, H, W)``.
        kernel_size: odd kernel size (RISE: 11 at 224 px).
        sigma: standard deviation in pixels (RISE: 5).

    Example:
        >>> blur_images(torch.ones(1, 1, 4, 4)).allclose(torch.ones(1, 1, 4, 4))
        True
    """
    check_tensor("images", images, 4, floating=True)
    check_positive("sigma", sigma)
    check_int("kernel_size", kernel_size, 1)
    if kernel_size % 2 == 0:
        raise ValueError(f"Expected `kernel_size` to be a positive odd int, but got {kernel_size}.")
    limit = 2 * (min(images.shape[-2:]) - 1) + 1
    k = min(kernel_size, limit)
    if k <= 1:
        return images.clone()
    return gaussian_blur_image(images, kernel_size=[k, k], sigma=[sigma, sigma])


def perturbation_curve(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    target: Tensor,
    mode: Literal["insertion", "deletion"] = "insertion",
    *,
    step_fraction: float = DEFAULT_STEP_FRACTION,
    substrate: Substrate = "blur",
    chunk_size: int = 128,
    blur_kernel_size: int = DEFAULT_BLUR_KERNEL_SIZE,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
) -> tuple[Tensor, Tensor]:
    r"""Insertion or deletion curve of Petsiuk et al. (RISE, 2018) as used by LICO §4.3.

    Pixels are ranked by decreasing saliency (ties: lower row-major index first) and moved in
    steps of ``s = round(step_fraction · H·W)`` pixels. With :math:`k_i = \min(i s, HW)` for
    :math:`i = 0, \dots, n = \lceil HW / s \rceil` the i-th image is

    .. math::
        x^{(i)} = m_i \odot x_{\text{finish}} + (1 - m_i) \odot x_{\text{start}}, \qquad
        m_i = \mathbb{1}[\operatorname{rank}(p) < k_i]

    with ``insertion``: start = substrate (blurred image), finish = image; ``deletion``:
    start = image, finish = substrate (blurred or zero image). The curve is the softmax
    probability of the target class, :math:`p_c(x^{(i)})`, against the fraction
    :math:`k_i / HW`. All ``B·(n+1)`` perturbed images are evaluated in chunks of
    ``chunk_size`` (the model must treat samples independently, e.g. eval mode).

    Args:
        model: callable ``(B, C, H, W) -> (B, num_classes)`` logits, called under ``no_grad``.
        images: ``(B, C, H, W)``.
        saliency: ``(B, H, W)``.
        target: ``(B,)`` long.
        mode: ``"insertion"`` or ``"deletion"``.
        step_fraction: share of pixels per step, in (0, 1] (LICO: 0.036).
        substrate: ``"blur"`` (Gaussian blur of the image) or ``"zero"``.
        chunk_size: perturbed images per forward pass.
        blur_kernel_size: Gaussian kernel size (RISE: 11).
        blur_sigma: Gaussian sigma (RISE: 5).

    Returns:
        ``(fractions (n+1,), scores (B, n+1))``.

    Example:
        >>> model = lambda x: torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)
        >>> frac, scores = perturbation_curve(model, torch.ones(1, 1, 4, 4), torch.rand(1, 4, 4),
        ...     torch.tensor([0]), "deletion", step_fraction=0.25, substrate="zero")
        >>> frac
        tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000])
        >>> scores.shape
        torch.Size([1, 5])
    """
    check_choice("mode", mode, ["insertion", "deletion"])
    fractions, curves = _curves(
        model,
        images,
        saliency,
        target,
        {mode: substrate},
        step_fraction=step_fraction,
        chunk_size=chunk_size,
        blur_kernel_size=blur_kernel_size,
        blur_sigma=blur_sigma,
    )
    return fractions, curves[mode]


def insertion_deletion_curves(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    target: Tensor,
    *,
    step_fraction: float = DEFAULT_STEP_FRACTION,
    insertion_substrate: Substrate = "blur",
    deletion_substrate: Substrate = "blur",
    chunk_size: int = 128,
    blur_kernel_size: int = DEFAULT_BLUR_KERNEL_SIZE,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Insertion and deletion curves together, each distinct image evaluated once.

    Same curves as two :func:`perturbation_curve` calls, but the unperturbed image (last
    insertion point = first deletion point) is evaluated once, and so is the substrate when
    both modes use the same one (first insertion point = last deletion point): ``2n`` forward
    passes per image instead of ``2n + 2``.

    Args: as :func:`perturbation_curve`, with one substrate per mode.

    Returns:
        ``(fractions (n+1,), insertion (B, n+1), deletion (B, n+1))``.

    Example:
        >>> model = lambda x: torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)
        >>> x, s, t = torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 1])
        >>> frac, ins, dele = insertion_deletion_curves(model, x, s, t, step_fraction=0.25)
        >>> torch.allclose(ins[:, -1], dele[:, 0]) and torch.allclose(ins[:, 0], dele[:, -1])
        True
    """
    fractions, curves = _curves(
        model,
        images,
        saliency,
        target,
        {"insertion": insertion_substrate, "deletion": deletion_substrate},
        step_fraction=step_fraction,
        chunk_size=chunk_size,
        blur_kernel_size=blur_kernel_size,
        blur_sigma=blur_sigma,
    )
    return fractions, curves["insertion"], curves["deletion"]


def _curves(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    target: Tensor,
    substrates: Mapping[str, Substrate],
    *,
    step_fraction: float,
    chunk_size: int,
    blur_kernel_size: int,
    blur_sigma: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``(fractions (n+1,), {mode: scores (B, n+1)})`` for ``substrates`` ``{mode: substrate}``.

    Every distinct image is evaluated once: a point with nothing moved is the mode's whole
    start source, one with everything moved its whole finish source, so the unperturbed image
    (end of insertion, start of deletion) and a substrate both modes share are single jobs.
    """
    check_images_saliency(images, saliency)
    check_target(target, images.shape[0])
    modes = [m for m in ("insertion", "deletion") if m in substrates]
    if not modes or len(modes) != len(substrates):
        raise ValueError(
            "Expected `substrates` to map 'insertion' and/or 'deletion' to a substrate, but got "
            f"{dict(substrates)!r}."
        )
    for mode in modes:
        check_choice(f"{mode}_substrate", substrates[mode], ["blur", "zero"])
    _check_step_and_chunk(step_fraction, chunk_size)
    counts, fractions = _step_counts(images, step_fraction)
    n = counts.numel() - 1
    with torch.no_grad():
        sources, source_of = [images], {"image": 0}
        for mode in modes:
            if substrates[mode] not in source_of:
                source_of[substrates[mode]] = len(sources)
                sources.append(_substrate(images, substrates[mode], blur_kernel_size, blur_sigma))
        jobs: dict[tuple[int, int, int], int] = {}  # (finish, start, pixels moved) -> column
        columns: dict[str, list[int]] = {}
        for mode in modes:
            # insertion reveals the image over the substrate; deletion the reverse
            base = source_of[substrates[mode]]
            finish, start = (0, base) if mode == "insertion" else (base, 0)
            columns[mode] = []
            for i in range(n + 1):
                key = (start, start, 0) if i == 0 else (finish, finish, 0) if i == n else None
                key = key or (finish, start, int(counts[i]))
                columns[mode].append(jobs.setdefault(key, len(jobs)))
        finish_t, start_t, counts_t = torch.tensor(list(jobs)).unbind(1)
        scores = _evaluate_jobs(
            model,
            torch.stack(sources),
            _pixel_rank(saliency),
            target,
            finish_t,
            start_t,
            counts_t,
            chunk_size,
        )
    return fractions, {mode: scores[:, columns[mode]] for mode in modes}


def _step_counts(images: Tensor, step_fraction: float) -> tuple[Tensor, Tensor]:
    """Pixels moved after each step, ``k_i = min(i·s, HW)``, and the fractions ``k_i / HW``."""
    hw = images.shape[-2] * images.shape[-1]
    step = max(1, round(step_fraction * hw))
    n_steps = math.ceil(hw / step)
    counts = torch.clamp(torch.arange(n_steps + 1) * step, max=hw)
    return counts, counts.float() / hw


def _substrate(images: Tensor, substrate: str, kernel_size: int, sigma: float) -> Tensor:
    return (
        blur_images(images, kernel_size, sigma) if substrate == "blur" else torch.zeros_like(images)
    )


def _pixel_rank(saliency: Tensor) -> Tensor:
    """Position of each pixel in decreasing-saliency order (stable), ``(B, 1, H, W)``."""
    b, h, w = saliency.shape
    order = saliency.flatten(1).argsort(dim=1, descending=True, stable=True)
    arange = torch.arange(h * w, device=saliency.device).expand(b, h * w)
    return torch.empty_like(order).scatter_(1, order, arange).view(b, 1, h, w)


def _evaluate_jobs(
    model: Model,
    sources: Tensor,
    rank: Tensor,
    target: Tensor,
    finish: Tensor,
    start: Tensor,
    counts: Tensor,
    chunk_size: int,
) -> Tensor:
    """Target probability of every (image b, job j): ``where(rank_b < k_j, S[finish_j, b],
    S[start_j, b])``, evaluated in chunks over the flat ``B·J`` pairs; returns ``(B, J)``."""
    b, jobs = sources.shape[1], finish.numel()
    device = sources.device
    finish, start, counts = finish.to(device), start.to(device), counts.to(device)
    total = b * jobs
    scores = torch.empty(total, dtype=torch.float32, device=device)
    for lo in range(0, total, chunk_size):
        flat = torch.arange(lo, min(lo + chunk_size, total), device=device)
        bi, ji = flat // jobs, flat % jobs
        mask = rank[bi] < counts[ji].view(-1, 1, 1, 1)
        x = torch.where(mask, sources[finish[ji], bi], sources[start[ji], bi])
        logits = check_logits(model(x), x.shape[0])
        if lo == 0:  # the class count is known from the first chunk: check every target once
            check_target_range(target, logits.shape[1])
        scores[lo : lo + flat.numel()] = target_probability(logits, target[bi])
    return scores.view(b, jobs)


def curve_auc(scores: Tensor, fractions: Tensor | None = None) -> Tensor:
    r"""Area under curves over the perturbed fraction, by the trapezoid rule.

    .. math::
        \mathrm{AUC}_b = \sum_{i=1}^{n} \tfrac12 (y_{b,i-1} + y_{b,i})(f_i - f_{i-1})

    Equals RISE's ``(sum - y_0/2 - y_n/2) / n`` for evenly spaced fractions; a partial last
    step (classifier curves whose step does not divide ``H·W``) keeps its true width. The x-axis
    is the fraction of perturbed features, so areas of inputs with different numbers of
    features are comparable; the y-axis is the model's score in its own units.

    Args:
        scores: ``(..., n+1)`` finite curve values, ``n >= 1``.
        fractions: ``(n+1,)`` finite fractions increasing from 0 to 1 (e.g. from
            :func:`perturbation_curve`); ``None``: evenly spaced, :math:`f_i = i / n`.

    Returns:
        ``(...)`` areas.

    Example:
        >>> curve_auc(torch.tensor([[0.0, 1.0, 1.0]]))
        tensor([0.7500])
        >>> curve_auc(torch.tensor([[0.0, 1.0, 1.0]]), torch.tensor([0.0, 0.75, 1.0]))
        tensor([0.6250])
    """
    check_tensor("scores", scores, floating=True)
    if scores.ndim < 1 or scores.shape[-1] < 2:
        raise ValueError(
            f"Expected `scores` with at least 2 points per curve (..., n+1), but got shape "
            f"{tuple(scores.shape)}."
        )
    check_finite("scores", scores)
    if fractions is None:
        return torch.trapezoid(scores, dx=1.0 / (scores.shape[-1] - 1), dim=-1)
    check_tensor("fractions", fractions, 1, floating=True)
    if fractions.shape[0] != scores.shape[-1]:
        raise ValueError(
            f"Expected `fractions` of shape ({scores.shape[-1]},), one per point of `scores` "
            f"{tuple(scores.shape)}, but got {tuple(fractions.shape)}."
        )
    check_finite("fractions", fractions)
    ends = (float(fractions[0]), float(fractions[-1]))
    if bool((fractions.diff() < 0).any()) or ends != (0.0, 1.0):
        raise ValueError(
            f"Expected `fractions` increasing from 0 to 1, but got {fractions.tolist()}."
        )
    return torch.trapezoid(scores, x=fractions.to(scores), dim=-1)


def _perturbation_aucs(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    target: Tensor,
    substrates: Mapping[str, Substrate],
    *,
    step_fraction: float = DEFAULT_STEP_FRACTION,
    chunk_size: int = 128,
    blur_kernel_size: int = DEFAULT_BLUR_KERNEL_SIZE,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
) -> dict[str, Tensor]:
    """Per-image insertion and/or deletion AUCs, ``{mode: (B,)}``, for ``substrates``
    ``{mode: substrate}`` with ``mode`` in ``"insertion"``, ``"deletion"``.

    Both modes together share one pass (the unperturbed image and a common substrate
    evaluated once, as in :func:`insertion_deletion_curves`). The one entry point behind :func:`insertion_auc`, :func:`deletion_auc`, the
    ``InsertionAUC`` / ``DeletionAUC`` / ``InsertionDeletionAUC`` metrics (and so of
    :class:`~lico_lightning.evaluation.SaliencyEvaluation`).

    Example:
        >>> model = lambda x: torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)
        >>> aucs = _perturbation_aucs(model, torch.ones(2, 1, 4, 4), torch.rand(2, 4, 4),
        ...     torch.tensor([0, 1]), {"insertion": "blur", "deletion": "zero"}, step_fraction=0.25)
        >>> sorted(aucs), aucs["deletion"].shape
        (['deletion', 'insertion'], torch.Size([2]))
    """
    fractions, curves = _curves(
        model,
        images,
        saliency,
        target,
        substrates,
        step_fraction=step_fraction,
        chunk_size=chunk_size,
        blur_kernel_size=blur_kernel_size,
        blur_sigma=blur_sigma,
    )
    return {mode: curve_auc(scores, fractions) for mode, scores in curves.items()}


def insertion_auc(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    target: Tensor,
    *,
    step_fraction: float = DEFAULT_STEP_FRACTION,
    substrate: Substrate = "blur",
    chunk_size: int = 128,
    blur_kernel_size: int = DEFAULT_BLUR_KERNEL_SIZE,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Insertion AUC (higher is better): pixels enter a blurred image by decreasing saliency.

    .. math::
        \text{Ins} = \int_0^1 p_c\big(x^{(f)}_{\text{ins}}\big)\, df

    See :func:`perturbation_curve` for the protocol and arguments.

    Returns:
        Scalar mean, or ``(B,)`` with ``reduction="none"``.

    Example:
        >>> model = lambda x: torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)
        >>> float(insertion_auc(model, torch.ones(1, 1, 4, 4), torch.rand(1, 4, 4),
        ...     torch.tensor([0]), substrate="zero")) > 0.5
        True
    """
    check_choice("reduction", reduction, ["mean", "none"])
    aucs = _perturbation_aucs(
        model,
        images,
        saliency,
        target,
        {"insertion": substrate},
        step_fraction=step_fraction,
        chunk_size=chunk_size,
        blur_kernel_size=blur_kernel_size,
        blur_sigma=blur_sigma,
    )
    return aucs["insertion"].mean() if reduction == "mean" else aucs["insertion"]


def deletion_auc(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    target: Tensor,
    *,
    step_fraction: float = DEFAULT_STEP_FRACTION,
    substrate: Substrate = "blur",
    chunk_size: int = 128,
    blur_kernel_size: int = DEFAULT_BLUR_KERNEL_SIZE,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Deletion AUC (lower is better): pixels are replaced by the substrate by decreasing saliency.

    .. math::
        \text{Del} = \int_0^1 p_c\big(x^{(f)}_{\text{del}}\big)\, df

    See :func:`perturbation_curve` for the protocol and arguments. LICO's "overall" score is
    ``insertion_auc - deletion_auc``.

    Returns:
        Scalar mean, or ``(B,)`` with ``reduction="none"``.

    Example:
        >>> model = lambda x: torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)
        >>> float(deletion_auc(model, torch.ones(1, 1, 4, 4), torch.rand(1, 4, 4),
        ...     torch.tensor([0]), substrate="zero")) < 0.9
        True
    """
    check_choice("reduction", reduction, ["mean", "none"])
    aucs = _perturbation_aucs(
        model,
        images,
        saliency,
        target,
        {"deletion": substrate},
        step_fraction=step_fraction,
        chunk_size=chunk_size,
        blur_kernel_size=blur_kernel_size,
        blur_sigma=blur_sigma,
    )
    return aucs["deletion"].mean() if reduction == "mean" else aucs["deletion"]


def insertion_deletion_auc(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    target: Tensor,
    *,
    step_fraction: float = DEFAULT_STEP_FRACTION,
    insertion_substrate: Substrate = "blur",
    deletion_substrate: Substrate = "blur",
    chunk_size: int = 128,
    blur_kernel_size: int = DEFAULT_BLUR_KERNEL_SIZE,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    reduction: Reduction = "mean",
) -> tuple[Tensor, Tensor]:
    r"""Insertion and deletion AUC from one pass (:func:`insertion_deletion_curves`); LICO's
    "overall" is their difference.

    .. math::
        \text{Overall} = \text{Ins} - \text{Del}

    Args: as :func:`insertion_deletion_curves`, plus ``reduction`` (``"mean"`` or ``"none"``).

    Returns:
        ``(insertion, deletion)``, each a scalar or ``(B,)``.

    Example:
        >>> model = lambda x: torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)
        >>> ins, dele = insertion_deletion_auc(model, torch.ones(2, 1, 4, 4), torch.rand(2, 4, 4),
        ...     torch.tensor([0, 1]), step_fraction=0.25, reduction="none")
        >>> ins.shape, dele.shape
        (torch.Size([2]), torch.Size([2]))
    """
    check_choice("reduction", reduction, ["mean", "none"])
    aucs = _perturbation_aucs(
        model,
        images,
        saliency,
        target,
        {"insertion": insertion_substrate, "deletion": deletion_substrate},
        step_fraction=step_fraction,
        chunk_size=chunk_size,
        blur_kernel_size=blur_kernel_size,
        blur_sigma=blur_sigma,
    )
    ins, dele = aucs["insertion"], aucs["deletion"]
    return (ins.mean(), dele.mean()) if reduction == "mean" else (ins, dele)


def perturbation_keep_masks(
    scores: Tensor,
    mode: Literal["deletion", "insertion"],
    num_steps: int | None = None,
    candidates: Tensor | None = None,
) -> Tensor:
    """Which features are present at every step of an insertion or deletion curve.

    Features (patches or tokens) are ranked by ``scores`` (highest first, ties by position).
    Step ``j`` of ``num_steps`` perturbs the top ``k_j = round(j · n_b / num_steps)`` candidates
    of row ``b`` (``n_b`` = its number of candidates): deletion removes them, insertion keeps
    only them. Non-candidates (e.g. SOT, EOT, padding) are always present.

    Args:
        scores: ``(B, T)`` attribution of each feature for the pair being explained.
        mode: ``"deletion"`` (most attributed removed first) or ``"insertion"``.
        num_steps: number of perturbation steps (default: the largest ``n_b``, i.e. one
            feature per step).
        candidates: ``(B, T)`` bool, the features that may be perturbed (default: all).

    Returns:
        ``(B, num_steps + 1, T)`` bool, True = present. Step 0 is the unperturbed input for
        deletion and the empty input for insertion.

    Example:
        >>> perturbation_keep_masks(torch.tensor([[0.1, 0.9, 0.5]]), "deletion").int()
        tensor([[[1, 1, 1],
                 [1, 0, 1],
                 [1, 0, 0],
                 [0, 0, 0]]], dtype=torch.int32)
    """
    check_tensor("scores", scores, ndim=2, floating=True)
    check_finite("scores", scores)
    check_choice("mode", mode, ("deletion", "insertion"))
    b, t = scores.shape
    if candidates is None:
        candidates = torch.ones(b, t, dtype=torch.bool, device=scores.device)
    else:
        check_tensor("candidates", candidates, ndim=2)
        if candidates.dtype != torch.bool or candidates.shape != scores.shape:
            raise ValueError(
                f"Expected `candidates` to be a bool tensor of shape {tuple(scores.shape)}, but "
                f"got {candidates.dtype} {tuple(candidates.shape)}."
            )
    n = candidates.sum(1)  # (B,)
    if num_steps is None:
        num_steps = max(int(n.max()), 1)
    check_int("num_steps", num_steps, 1)
    # rank of every feature among its row's candidates (0 = most attributed)
    masked = torch.where(candidates, scores, torch.full_like(scores, float("-inf")))
    order = torch.sort(masked, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(t, device=scores.device).expand(b, t))
    steps = torch.arange(num_steps + 1, device=scores.device)
    k = torch.div(steps[None] * n[:, None] * 2 + num_steps, 2 * num_steps, rounding_mode="floor")
    perturbed = rank[:, None, :] < k[:, :, None]  # (B, steps + 1, T): in the top k_j
    perturbed = perturbed & candidates[:, None, :]
    if mode == "deletion":
        return ~perturbed
    return perturbed | ~candidates[:, None, :]
