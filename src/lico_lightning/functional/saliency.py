r"""Saliency-map quality metrics: faithfulness (insertion / deletion, average drop) and
localisation (pointing game, energy pointing game), plus the rank correlation used by the
parameter-randomisation sanity check.

Pure torch, no state, no Lightning import. Functions that need a classifier take any callable
``model(images) -> logits`` and run it under ``torch.no_grad()``; they do **not** change the
model's train/eval mode — the metric classes and the callback do that (and restore it).

Conventions shared by every function here:

* ``images`` ``(B, C, H, W)`` float, already normalised like the model's training data;
  ``saliency`` ``(B, H, W)`` at input resolution (larger = more important);
  ``target`` ``(B,)`` long class indices.
* "Zero" images are zeros of the given tensor, i.e. the dataset mean colour for normalised
  inputs. The explanation map of average drop multiplies the normalised image, which likewise
  fades towards the mean colour.
* **Boxes** are a list of ``B`` tensors of shape ``(K_i, 4)`` (``K_i`` may be 0), each row
  ``(x1, y1, x2, y2)`` in pixel-edge coordinates (torchvision / COCO convention: pixel
  ``(row i, col j)`` covers ``[j, j+1) x [i, i+1)`` and has centre ``(j + 0.5, i + 0.5)``; the box
  ``(0, 0, W, H)`` covers the whole image). ``0 <= x1 <= x2 <= W`` and ``0 <= y1 <= y2 <= H``.
  Images with no boxes are **skipped** by the localisation metrics (they are neither hits nor
  misses), reported through the returned ``valid`` mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur_image

from lico_lightning._validation import check_choice, check_positive, check_tensor
from lico_lightning.functional._shared_metrics import (
    box_cell_masks,
    check_boxes_in_image,
    pointing_hits,
    positive_energy_share,
    rank_correlation,
    score_change,
    trapezoid_auc,
)

__all__ = [
    "average_drop",
    "blur_images",
    "check_logits",
    "check_target_range",
    "confidence_change",
    "curve_auc",
    "deletion_auc",
    "energy_pointing_game",
    "increase_in_confidence",
    "insertion_auc",
    "insertion_deletion_curves",
    "normalize_saliency",
    "perturbation_curve",
    "pointing_game",
    "spearman_rank_correlation",
    "target_probability",
]

Model = Callable[[Tensor], Tensor]
Substrate = Literal["blur", "zero"]
Reduction = Literal["mean", "none"]

#: RISE's blur for insertion / deletion (kernel 11, sigma 5, at 224 px).
DEFAULT_BLUR_KERNEL_SIZE = 11
DEFAULT_BLUR_SIGMA = 5.0
#: LICO / Score-CAM step: 3.6 % of the pixels per step.
DEFAULT_STEP_FRACTION = 0.036
#: Zhang et al. (2018) pointing-game tolerance in pixels.
DEFAULT_TOLERANCE = 15.0


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _check_images_saliency(images: Tensor, saliency: Tensor) -> None:
    check_tensor("images", images, 4, floating=True)
    check_tensor("saliency", saliency, 3, floating=True)
    if saliency.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            "Expected `saliency` of shape (B, H, W) = "
            f"{(images.shape[0], *images.shape[2:])} matching `images` {tuple(images.shape)}, "
            f"but got {tuple(saliency.shape)}."
        )


def _check_target(target: Tensor, batch_size: int, num_classes: int | None = None) -> None:
    check_tensor("target", target, 1)
    if target.dtype != torch.long:
        raise TypeError(f"Expected `target` to be a torch.long tensor, but got {target.dtype}.")
    if target.shape[0] != batch_size:
        raise ValueError(
            f"Expected `target` of shape ({batch_size},), but got {tuple(target.shape)}."
        )
    if num_classes is not None:
        check_target_range(target, num_classes)


def check_target_range(target: Tensor, num_classes: int) -> None:
    """Raise ``ValueError`` unless every ``target`` lies in ``[0, num_classes)``."""
    bad = (target < 0) | (target >= num_classes)
    if bool(bad.any()):
        raise ValueError(
            f"Expected `target` in [0, {num_classes}) (the model has {num_classes} classes), "
            f"but got {target[bad].tolist()}."
        )


def _check_boxes(
    boxes: Sequence[Tensor], batch_size: int, height: int, width: int
) -> tuple[Tensor, Tensor]:
    """Validate the per-image box list; return flat boxes ``(N, 4)`` and their image index ``(N,)``."""
    if isinstance(boxes, Tensor) or not isinstance(boxes, Sequence):
        raise TypeError(
            "Expected `boxes` to be a list of B tensors of shape (K_i, 4), "
            f"but got {type(boxes).__name__}."
        )
    if len(boxes) != batch_size:
        raise ValueError(
            f"Expected `boxes` to hold one (K_i, 4) tensor per image ({batch_size}), "
            f"but got {len(boxes)}."
        )
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor):
            raise TypeError(
                f"Expected `boxes[{i}]` to be a torch.Tensor, but got {type(b).__name__}."
            )
        if not (b.ndim == 2 and b.shape[1] == 4) and b.numel() != 0:
            raise ValueError(f"Expected `boxes[{i}]` of shape (K, 4), but got {tuple(b.shape)}.")
    flat = torch.cat([b.reshape(-1, 4).float() for b in boxes]) if boxes else torch.zeros(0, 4)
    counts = torch.tensor([b.numel() // 4 for b in boxes], dtype=torch.long)
    image_index = torch.repeat_interleave(torch.arange(batch_size), counts)
    check_boxes_in_image(flat, (height, width), strict=False, image_index=image_index)
    return flat, image_index


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def normalize_saliency(saliency: Tensor) -> Tensor:
    r"""Min-max normalise each map to ``[0, 1]``; a constant map becomes all zeros.

    .. math::
        \hat s = \frac{s - \min s}{\max s - \min s}

    Args:
        saliency: ``(B, H, W)`` (or ``(B, *)``) maps.

    Returns:
        Tensor of the same shape with values in ``[0, 1]``.

    Example:
        >>> normalize_saliency(torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]]))
        tensor([[[0., 1.]],
        <BLANKLINE>
                [[0., 0.]]])
    """
    flat = saliency.flatten(1)
    lo = flat.amin(1, keepdim=True)
    span = flat.amax(1, keepdim=True) - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny), 0.0)
    return out.view_as(saliency)


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
    check_positive("sigma", sigma)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"Expected `kernel_size` to be a positive odd int, but got {kernel_size}.")
    limit = 2 * (min(images.shape[-2:]) - 1) + 1
    k = min(kernel_size, limit)
    if k <= 1:
        return images.clone()
    return gaussian_blur_image(images, kernel_size=[k, k], sigma=[sigma, sigma])


def check_logits(logits: object, batch_size: int) -> Tensor:
    """Raise ``ValueError`` unless the model output is ``(batch_size, num_classes)`` logits."""
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != batch_size:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"Expected the model to return logits of shape (B, num_classes) = ({batch_size}, ...), "
            f"but got {shape}."
        )
    return logits


def target_probability(model: Model, x: Tensor, target: Tensor) -> Tensor:
    """Softmax probability of ``target`` for each image: ``(B, C, H, W), (B,) -> (B,)``."""
    logits = check_logits(model(x), x.shape[0])
    check_target_range(target, logits.shape[1])
    return _probability_of(logits, target)


def _probability_of(logits: Tensor, target: Tensor) -> Tensor:
    """``softmax(logits)[b, target_b]`` without the range check (loops check once, up front)."""
    return logits.float().softmax(-1).gather(1, target[:, None]).squeeze(1)


def _reduce(values: Tensor, valid: Tensor | None, reduction: Reduction) -> Tensor:
    check_choice("reduction", reduction, ["mean", "none"])
    if reduction == "none":
        return values
    if valid is not None:
        values = values[valid]
    if values.numel() == 0:
        return values.new_zeros(())
    return values.float().mean()


# --------------------------------------------------------------------------------------------
# insertion / deletion
# --------------------------------------------------------------------------------------------
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
    _check_images_saliency(images, saliency)
    _check_target(target, images.shape[0])
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


def _check_step_and_chunk(step_fraction: float, chunk_size: int) -> None:
    if not 0.0 < step_fraction <= 1.0:
        raise ValueError(f"Expected `step_fraction` in (0, 1], but got {step_fraction!r}.")
    check_positive("chunk_size", chunk_size)


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
        scores[lo : lo + flat.numel()] = _probability_of(logits, target[bi])
    return scores.view(b, jobs)


def curve_auc(fractions: Tensor, scores: Tensor) -> Tensor:
    r"""Area under ``scores`` over the fraction axis by the trapezoid rule, in ``[0, 1]``.

    .. math::
        \text{AUC} = \sum_{i=1}^{n} \tfrac12 (p_{i-1} + p_i)(f_i - f_{i-1})

    Equals RISE's ``(sum - p_0/2 - p_n/2) / n`` when the step divides ``H·W``; a partial last
    step is weighted by its true width. One core with
    :func:`~lico_lightning.functional.insertion_deletion_auc` (evenly spaced curves).

    Args:
        fractions: ``(n+1,)`` increasing from 0 to 1.
        scores: ``(B, n+1)`` probabilities.

    Returns:
        ``(B,)``.

    Example:
        >>> curve_auc(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([[0.0, 1.0, 1.0]]))
        tensor([0.7500])
    """
    return trapezoid_auc(scores, fractions)


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
    ``InsertionAUC`` / ``DeletionAUC`` / ``InsertionDeletionAUC`` metrics and
    :func:`~lico_lightning.explain.compute_saliency_metrics`.

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
    return {mode: curve_auc(fractions, scores) for mode, scores in curves.items()}


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
    return _reduce(aucs["insertion"], None, reduction)


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
    return _reduce(aucs["deletion"], None, reduction)


# --------------------------------------------------------------------------------------------
# average drop / increase in confidence (Grad-CAM++)
# --------------------------------------------------------------------------------------------
def confidence_change(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    target: Tensor,
    clean_probability: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Per-sample drop and increase of confidence when the model sees only the explanation map.

    Following Chattopadhyay et al. (Grad-CAM++, 2018), the explanation map is the image
    multiplied by the min-max normalised saliency, :math:`E = x \odot \hat s`; with
    :math:`Y = p_c(x)` and :math:`O = p_c(E)` (softmax probabilities of the target)

    .. math::
        \text{drop} = \frac{\max(0, Y - O)}{Y}, \qquad \text{increase} = \mathbb{1}[Y < O]

    The same core as M2IB's :func:`~lico_lightning.functional.confidence_drop` /
    :func:`~lico_lightning.functional.confidence_increase`, whose drop is absolute (not divided
    by :math:`Y`: its scores are cosine similarities).

    Args:
        model: callable ``(B, C, H, W) -> (B, num_classes)`` logits, called under ``no_grad``.
        images: ``(B, C, H, W)``.
        saliency: ``(B, H, W)``.
        target: ``(B,)`` long.
        clean_probability: ``(B,)`` :math:`Y` when the caller already has it (e.g. from the
            forward pass that chose the target); then only the explanation maps are run.

    Returns:
        ``(drop (B,) float in [0, 1], increase (B,) bool)``.

    Example:
        >>> model = lambda x: torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)
        >>> drop, inc = confidence_change(model, torch.ones(2, 1, 2, 2),
        ...     torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]), torch.tensor([0, 1]))
        >>> inc
        tensor([False,  True])
    """
    _check_images_saliency(images, saliency)
    _check_target(target, images.shape[0])
    if clean_probability is not None:
        check_tensor("clean_probability", clean_probability, ndim=1, floating=True)
        if clean_probability.shape[0] != images.shape[0]:
            raise ValueError(
                f"Expected `clean_probability` of shape ({images.shape[0]},), but got "
                f"{tuple(clean_probability.shape)}."
            )
    with torch.no_grad():
        explanation = images * normalize_saliency(saliency).unsqueeze(1).to(images)
        if clean_probability is None:
            probs = target_probability(model, torch.cat([images, explanation]), target.repeat(2))
            y, o = probs.chunk(2)
        else:
            y, o = clean_probability.float(), target_probability(model, explanation, target)
    return score_change(y, o, relative=True)


def average_drop(
    model: Model, images: Tensor, saliency: Tensor, target: Tensor, reduction: Reduction = "mean"
) -> Tensor:
    r"""Average drop in confidence (lower is better), as a fraction (×100 for the papers' %).

    .. math::
        \text{AD} = \frac1B \sum_b \frac{\max(0, Y_b - O_b)}{Y_b}

    See :func:`confidence_change`.

    Example:
        >>> model = lambda x: torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)
        >>> sal = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
        >>> average_drop(model, torch.ones(1, 1, 2, 2), sal, torch.tensor([0]))
        tensor(0.0718)
    """
    check_choice("reduction", reduction, ["mean", "none"])
    drop, _ = confidence_change(model, images, saliency, target)
    return _reduce(drop, None, reduction)


def increase_in_confidence(
    model: Model, images: Tensor, saliency: Tensor, target: Tensor, reduction: Reduction = "mean"
) -> Tensor:
    r"""Share of samples whose target confidence increases on the explanation map (higher is better).

    .. math::
        \text{IC} = \frac1B \sum_b \mathbb{1}[Y_b < O_b]

    See :func:`confidence_change`.

    Example:
        >>> model = lambda x: torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)
        >>> sal = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
        >>> increase_in_confidence(model, torch.ones(1, 1, 2, 2), sal, torch.tensor([0]))
        tensor(0.)
    """
    check_choice("reduction", reduction, ["mean", "none"])
    _, increase = confidence_change(model, images, saliency, target)
    return _reduce(increase.float(), None, reduction)


# --------------------------------------------------------------------------------------------
# pointing game
# --------------------------------------------------------------------------------------------
def pointing_game(
    saliency: Tensor,
    boxes: Sequence[Tensor],
    tolerance: float = DEFAULT_TOLERANCE,
    reduction: Reduction = "mean",
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Pointing game of Zhang et al. (2018): is the saliency maximum on (or near) an object?

    The maximum point is the first maximal pixel in row-major order (``argmax``; this is the
    tie rule — a constant map points at the top-left pixel). It is a **hit** if its centre lies
    within ``tolerance`` pixels (Euclidean) of *any* of the image's boxes:

    .. math::
        \text{hit}_b = \exists k: \sqrt{d_x^2 + d_y^2} \le \tau, \quad
        d_x = \max(x_1 - c_x, 0, c_x - x_2),\; d_y = \max(y_1 - c_y, 0, c_y - y_2)

    Accuracy = Hits / (Hits + Misses) over images that have at least one box; images with no
    box are skipped (returned as ``valid = False``). With ``tolerance=0`` and one box per
    image this is :func:`~lico_lightning.functional.pointing_game_accuracy` at pixel
    resolution (one core computes both).

    Args:
        saliency: ``(B, H, W)``.
        boxes: list of ``B`` tensors ``(K_i, 4)`` of ``(x1, y1, x2, y2)`` pixel-edge coords.
        tolerance: pixels (Zhang et al.: 15); 0 means the centre must be inside a box.
        reduction: ``"mean"`` → accuracy over valid images (0 if none is valid);
            ``"none"`` → ``(hits (B,) bool, valid (B,) bool)``.

    Example:
        >>> sal = torch.zeros(2, 40, 40); sal[0, 5, 5] = 1; sal[1, 30, 30] = 1
        >>> boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]])]
        >>> pointing_game(sal, boxes, tolerance=15, reduction="none")
        (tensor([ True, False]), tensor([True, True]))
        >>> pointing_game(sal, boxes)
        tensor(0.5000)
    """
    check_tensor("saliency", saliency, 3, floating=True)
    check_positive("tolerance", tolerance, strict=False)
    check_choice("reduction", reduction, ["mean", "none"])
    b, h, w = saliency.shape
    flat, img = _check_boxes(boxes, b, h, w)
    flat, img = flat.to(saliency.device), img.to(saliency.device)

    hits = pointing_hits(saliency, flat, img, (h, w), tolerance)
    valid = torch.bincount(img, minlength=b) > 0
    if reduction == "none":
        return hits, valid
    return _reduce(hits.float(), valid, "mean")


def energy_pointing_game(
    saliency: Tensor, boxes: Sequence[Tensor], reduction: Reduction = "mean"
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Energy-based pointing game (Wang et al., Score-CAM 2020): share of positive saliency
    inside the union of the image's boxes.

    .. math::
        \text{E}_b = \frac{\sum_{p \in \cup_k \text{box}_k} \max(s_p, 0)}{\sum_{p} \max(s_p, 0)}

    A pixel is inside a box when its centre is (boundaries included). A map with no positive
    saliency scores 0. Images with no box are skipped. The same formula (one core) as
    :func:`~lico_lightning.functional.pointing_game_energy`, here over the union of any number
    of boxes per image, in float32.

    Args:
        saliency: ``(B, H, W)``.
        boxes: list of ``B`` tensors ``(K_i, 4)`` (see module docstring).
        reduction: ``"mean"`` over valid images (0 if none), or ``"none"`` →
            ``(energy (B,), valid (B,) bool)``.

    Example:
        >>> sal = torch.zeros(1, 4, 4); sal[0, 0, 0] = 3.0; sal[0, 3, 3] = 1.0
        >>> energy_pointing_game(sal, [torch.tensor([[0.0, 0.0, 2.0, 2.0]])])
        tensor(0.7500)
    """
    check_tensor("saliency", saliency, 3, floating=True)
    check_choice("reduction", reduction, ["mean", "none"])
    b, h, w = saliency.shape
    flat, img = _check_boxes(boxes, b, h, w)
    flat, img = flat.to(saliency.device), img.to(saliency.device)

    box_masks = box_cell_masks(flat, (h, w), (h, w)).float()
    union = torch.zeros(b, h, w, device=saliency.device).index_add_(0, img, box_masks) > 0
    energy = positive_energy_share(saliency.float(), union)
    valid = torch.bincount(img, minlength=b) > 0
    if reduction == "none":
        return energy, valid
    return _reduce(energy, valid, "mean")


# --------------------------------------------------------------------------------------------
# rank correlation (sanity checks)
# --------------------------------------------------------------------------------------------
def spearman_rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    r"""Spearman rank correlation between rows of ``a`` and ``b`` (ties get average ranks).

    .. math::
        \rho = \frac{\operatorname{cov}(r_a, r_b)}{\sigma_{r_a} \sigma_{r_b}}

    A constant row has no ranking; its correlation is defined as 0 (instead of NaN). Same
    formula as :func:`~lico_lightning.functional.p_faithfulness_correlation` (which raises on
    a constant row instead), computed in float64.

    Args:
        a: ``(B, *)`` (e.g. saliency maps ``(B, H, W)``); flattened per row.
        b: same shape as ``a``.

    Returns:
        ``(B,)`` in ``[-1, 1]``.

    Example:
        >>> spearman_rank_correlation(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[10.0, 30.0, 20.0]]))
        tensor([0.5000])
    """
    check_tensor("a", a, floating=True)
    check_tensor("b", b, floating=True)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(
            f"Expected `a` and `b` of the same shape (B, ...), but got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    rho, _ = rank_correlation(a.flatten(1), b.flatten(1))
    return rho.to(a.dtype)
