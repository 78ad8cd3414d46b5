r"""Grounding and faithfulness formulas for explanations of dual encoders (pure torch).

* Pointing game (second-order attributions paper, §4.1, after Zhang et al. 2018): accuracy
  (PGA) — the most attributed cell lies in the object's box; energy (PGE) — the share of the
  positive attribution that falls in the box; its median over a data set is mPGE.
* Conditional insertion / deletion (§4.1, after Sammani et al. 2023): features of *one* input
  (image patches or caption tokens) are removed / inserted in the order of their attribution
  while the other input stays fixed; the area under the score curve is CID / CII (image) and
  CTD / CTI (text). :func:`perturbation_keep_masks` builds the masks, the model scores them
  (``lico_lightning.explain.conditional_perturbation_curves``), :func:`insertion_deletion_auc`
  integrates the curve.
* Confidence drop / increase (M2IB, eqs. 17–18): how the score changes when one input is
  distilled to its attributed part.

Conventions: boxes are ``(x1, y1, x2, y2)`` in pixels of an ``image_size = (H, W)`` image,
``0 <= x1 < x2 <= W`` and ``0 <= y1 < y2 <= H``. A cell of an ``(h, w)`` saliency grid belongs to
a box when its centre does (so a pixel-resolution map compares pixel by pixel, and a patch map
counts the patches whose centre lies in the box).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lico_lightning._validation import check_choice, check_finite, check_int_pair, check_tensor
from lico_lightning.functional._shared_metrics import (
    box_cell_masks,
    check_boxes_in_image,
    pointing_hits,
    positive_energy_share,
    score_change,
    trapezoid_auc,
)

__all__ = [
    "box_to_mask",
    "confidence_drop",
    "confidence_increase",
    "insertion_deletion_auc",
    "perturbation_keep_masks",
    "pointing_game_accuracy",
    "pointing_game_energy",
]


def box_to_mask(
    boxes: Tensor, grid_size: tuple[int, int], image_size: tuple[int, int] | None = None
) -> Tensor:
    """Cells of an ``(h, w)`` grid whose centre lies in a box.

    Args:
        boxes: ``(B, 4)`` boxes ``(x1, y1, x2, y2)`` in pixels.
        grid_size: ``(h, w)`` of the grid (a patch grid, or the pixel grid itself).
        image_size: ``(H, W)`` of the image the boxes refer to (default: ``grid_size``).

    Returns:
        ``(B, h, w)`` bool mask.

    .. math::
        m_{b,i,j} = [x_1 \\le (j + \\tfrac12) \\tfrac{W}{w} \\le x_2] \\,
                    [y_1 \\le (i + \\tfrac12) \\tfrac{H}{h} \\le y_2]

    Example:
        >>> box_to_mask(torch.tensor([[0.0, 0.0, 16.0, 8.0]]), (4, 4), (32, 32)).int()
        tensor([[[1, 1, 0, 0],
                 [0, 0, 0, 0],
                 [0, 0, 0, 0],
                 [0, 0, 0, 0]]], dtype=torch.int32)
    """
    h, w = check_int_pair("grid_size", grid_size)
    img_h, img_w = check_int_pair("image_size", image_size if image_size is not None else grid_size)
    boxes = _check_boxes(boxes, (img_h, img_w))
    return box_cell_masks(boxes, (h, w), (img_h, img_w))


def pointing_game_accuracy(
    saliency: Tensor,
    target: Tensor,
    image_size: tuple[int, int] | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Pointing game accuracy (PGA): does the most attributed cell lie in the target region?

    The most attributed cell is the first maximum in row-major order (``argmax``; a constant
    map points at the top-left cell). Regions without any cell count as misses.

    With boxes this is :func:`~lico_lightning.functional.pointing_game` with tolerance 0
    (the cell's centre lies in the box, edges included) for one box per map on a grid of any
    resolution; both call the same core.

    Args:
        saliency: ``(B, h, w)`` attribution maps (patch or pixel resolution).
        target: ``(B, 4)`` boxes in pixels of ``image_size``, or a ``(B, h, w)`` bool mask.
        image_size: ``(H, W)`` the boxes refer to (default: the map's size).
        reduction: ``"mean"`` (PGA) or ``"none"`` (``(B,)`` hits as float).

    .. math::
        \\mathrm{PGA} = \\frac{1}{B} \\sum_b
            \\big[\\operatorname{argmax}_{i,j} e_{b,ij} \\in \\mathrm{box}_b\\big]

    Example:
        >>> sal = torch.zeros(2, 4, 4)
        >>> sal[0, 0, 0] = 1.0  # in the box
        >>> sal[1, 3, 3] = 1.0  # outside
        >>> boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 2)
        >>> pointing_game_accuracy(sal, boxes, image_size=(32, 32))
        tensor(0.5000)
    """
    check_choice("reduction", reduction, ("mean", "none"))
    target, size = _check_saliency_target(saliency, target, image_size)
    if target.ndim == 3:  # a mask: the region is given cell by cell
        peak = saliency.flatten(1).argmax(1, keepdim=True)
        hits = target.flatten(1).gather(1, peak).squeeze(1)
    else:
        index = torch.arange(saliency.shape[0], device=saliency.device)
        hits = pointing_hits(saliency, target, index, size, tolerance=0.0)
    hits = hits.to(saliency.dtype)
    return hits.mean() if reduction == "mean" else hits


def pointing_game_energy(
    saliency: Tensor,
    target: Tensor,
    image_size: tuple[int, int] | None = None,
    reduction: Literal["mean", "median", "none"] = "mean",
) -> Tensor:
    """Pointing game energy (PGE): share of the positive attribution inside the target region.

    Maps without positive attribution score 0 (nothing points at the object). The same
    formula as :func:`~lico_lightning.functional.energy_pointing_game` (one core), here for
    one box or mask per map on a grid of any resolution.

    Args:
        saliency: ``(B, h, w)`` attribution maps.
        target: ``(B, 4)`` boxes in pixels of ``image_size``, or a ``(B, h, w)`` bool mask.
        image_size: ``(H, W)`` the boxes refer to (default: the map's size).
        reduction: ``"mean"``, ``"median"`` (mPGE; lower median for even B, like
            ``torch.median``) or ``"none"`` (``(B,)``).

    .. math::
        \\mathrm{PGE}_b = \\frac{\\sum_{(i,j) \\in \\mathrm{box}_b} \\max(e_{b,ij}, 0)}
                               {\\sum_{i,j} \\max(e_{b,ij}, 0)}

    Example:
        >>> sal = torch.tensor([[[3.0, -1.0], [1.0, 0.0]]])
        >>> pointing_game_energy(sal, torch.tensor([[0, 0, 1, 1]]))  # only cell (0, 0)
        tensor(0.7500)
    """
    check_choice("reduction", reduction, ("mean", "median", "none"))
    target, size = _check_saliency_target(saliency, target, image_size)
    grid = (int(saliency.shape[1]), int(saliency.shape[2]))
    mask = target if target.ndim == 3 else box_cell_masks(target, grid, size)
    energy = positive_energy_share(saliency, mask)
    if reduction == "mean":
        return energy.mean()
    if reduction == "median":
        return energy.median()
    return energy


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
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"Expected `num_steps` to be a positive int, but got {num_steps!r}.")
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


def insertion_deletion_auc(curves: Tensor) -> Tensor:
    """Area under insertion / deletion curves sampled at equally spaced fractions in [0, 1].

    The x-axis is the fraction of perturbed features, so AUCs of inputs with different numbers
    of features are comparable; the y-axis is the model's score in its own units. The same
    trapezoid rule as :func:`~lico_lightning.functional.curve_auc` (one core), for evenly
    spaced fractions.

    Args:
        curves: ``(B, J + 1)`` scores after perturbing ``0, 1/J, ..., 1`` of the features.

    Returns:
        ``(B,)`` trapezoid-rule areas.

    .. math::
        \\mathrm{AUC}_b = \\frac{1}{J} \\sum_{j=1}^{J} \\frac{y_{b,j-1} + y_{b,j}}{2}

    Example:
        >>> insertion_deletion_auc(torch.tensor([[0.0, 1.0, 1.0]]))
        tensor([0.7500])
    """
    check_tensor("curves", curves, ndim=2, floating=True)
    if curves.shape[1] < 2:
        raise ValueError(
            f"Expected `curves` with at least 2 points per row, but got shape {tuple(curves.shape)}."
        )
    check_finite("curves", curves)
    return trapezoid_auc(curves)


def confidence_drop(
    original: Tensor, distilled: Tensor, reduction: Literal["mean", "none"] = "mean"
) -> Tensor:
    """Confidence drop (M2IB eq. 17): mean decrease of the score when an input is distilled.

    Unlike Grad-CAM++'s :func:`~lico_lightning.functional.average_drop` the decrease is not
    divided by the original score: M2IB's scores are cosine similarities (possibly <= 0), not
    probabilities. Both share one core.

    Args:
        original: ``(B,)`` scores (M2IB: cosine similarity) of the original pairs.
        distilled: ``(B,)`` scores when one input keeps only its attributed part.
        reduction: ``"mean"`` or ``"none"`` (``(B,)`` per-pair drops).

    .. math::
        \\mathrm{drop} = \\frac{1}{B} \\sum_i \\max(0, o_i - s_i)

    Example:
        >>> confidence_drop(torch.tensor([0.3, 0.2]), torch.tensor([0.1, 0.4]))
        tensor(0.1000)
    """
    check_choice("reduction", reduction, ("mean", "none"))
    original, distilled = _check_pair(original, distilled)
    drop, _ = score_change(original, distilled, relative=False)
    return drop.mean() if reduction == "mean" else drop


def confidence_increase(
    original: Tensor, distilled: Tensor, reduction: Literal["mean", "none"] = "mean"
) -> Tensor:
    """Confidence increase (M2IB eq. 18): share of pairs whose score grows when distilled.

    The same indicator as Grad-CAM++'s
    :func:`~lico_lightning.functional.increase_in_confidence` (one core), on given scores.

    Args:
        original: ``(B,)`` scores of the original pairs.
        distilled: ``(B,)`` scores when one input keeps only its attributed part.
        reduction: ``"mean"`` or ``"none"`` (``(B,)`` indicators as float).

    .. math::
        \\mathrm{increase} = \\frac{1}{B} \\sum_i [o_i < s_i]

    Example:
        >>> confidence_increase(torch.tensor([0.3, 0.2]), torch.tensor([0.1, 0.4]))
        tensor(0.5000)
    """
    check_choice("reduction", reduction, ("mean", "none"))
    original, distilled = _check_pair(original, distilled)
    _, up = score_change(original, distilled, relative=False)
    up = up.to(original.dtype)
    return up.mean() if reduction == "mean" else up


# --------------------------------------------------------------------------- helpers
def _check_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """One non-empty box per map; returned as floating point (float32 for integer boxes)."""
    check_tensor("boxes", boxes, ndim=2)
    if boxes.shape[1] != 4:
        raise ValueError(
            f"Expected `boxes` of shape (B, 4) as (x1, y1, x2, y2), but got {tuple(boxes.shape)}."
        )
    if boxes.is_floating_point():
        check_finite("boxes", boxes)
    check_boxes_in_image(boxes, image_size, strict=True)
    return boxes if boxes.is_floating_point() else boxes.to(torch.float32)


def _check_saliency_target(
    saliency: Tensor, target: Tensor, image_size: tuple[int, int] | None
) -> tuple[Tensor, tuple[int, int]]:
    """Validate; return the ``(B, h, w)`` bool mask or the floating ``(B, 4)`` boxes, and the
    image size the boxes refer to."""
    check_tensor("saliency", saliency, ndim=3, floating=True)
    check_finite("saliency", saliency)
    check_tensor("target", target, ndim=(2, 3))
    if target.shape[0] != saliency.shape[0]:
        raise ValueError(
            f"Expected `target` with batch size {saliency.shape[0]} like `saliency`, but got "
            f"{target.shape[0]}."
        )
    grid = (int(saliency.shape[1]), int(saliency.shape[2]))
    if target.ndim == 3:
        if target.dtype != torch.bool or tuple(target.shape[1:]) != grid:
            raise ValueError(
                f"Expected a mask `target` of dtype bool and shape (B, {grid[0]}, {grid[1]}), "
                f"but got {target.dtype} {tuple(target.shape)}."
            )
        return target, grid
    size = check_int_pair("image_size", image_size if image_size is not None else grid)
    return _check_boxes(target, size), size


def _check_pair(original: Tensor, distilled: Tensor) -> tuple[Tensor, Tensor]:
    check_tensor("original", original, ndim=1, floating=True)
    check_tensor("distilled", distilled, ndim=1, floating=True)
    if original.shape != distilled.shape:
        raise ValueError(
            f"Expected `original` and `distilled` of equal shape, but got "
            f"{tuple(original.shape)} and {tuple(distilled.shape)}."
        )
    check_finite("original", original)
    check_finite("distilled", distilled)
    return original, distilled
