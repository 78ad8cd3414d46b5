r"""Metric formulas shared by several public views, each written once (pure torch).

The classifier-saliency metrics (:mod:`~lico_lightning.functional.saliency`), the
dual-encoder grounding metrics (:mod:`~lico_lightning.functional.grounding`) and the
interaction metrics (:mod:`~lico_lightning.functional.interaction_metrics`) were written for
different input formats — per-image box lists at pixel resolution, one box per pair on a
patch grid, batches of game values — but several of their formulas are the same. The public
functions keep their own inputs, validation and reductions and call the cores here.

No input checks happen here: callers validate first.
"""

from __future__ import annotations

import torch
from torch import Tensor


# --------------------------------------------------------------------------- rank correlation
def average_ranks(x: Tensor, dtype: torch.dtype) -> Tensor:
    """1-based ranks along the last dimension, ties sharing their average rank, in ``dtype``.

    ``(left + right + 1) / 2`` with ``left`` / ``right`` the insertion points of each value in
    the sorted row: ``left + 1`` is the first and ``right`` the last rank of its tie group.
    """
    sorted_x = x.sort(dim=-1).values.contiguous()
    xc = x.contiguous()
    left = torch.searchsorted(sorted_x, xc, side="left")
    right = torch.searchsorted(sorted_x, xc, side="right")
    return (left + right + 1).to(dtype) / 2.0


def rank_correlation(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    r"""Spearman's :math:`\rho` along the last dimension (Pearson correlation of average ranks).

    .. math::
        \rho = \frac{\sum_i (r^a_i - \bar r^a)(r^b_i - \bar r^b)}
                    {\lVert r^a - \bar r^a \rVert \, \lVert r^b - \bar r^b \rVert}

    Computed in float64 (ranks are exact there). Returns ``(rho, defined)``: ``defined`` is
    False where a row is constant (no ranking), and ``rho`` is 0 there instead of NaN.
    """
    ra = average_ranks(a, torch.float64)
    rb = average_ranks(b, torch.float64)
    ra = ra - ra.mean(-1, keepdim=True)
    rb = rb - rb.mean(-1, keepdim=True)
    denom = ra.norm(dim=-1) * rb.norm(dim=-1)
    defined = denom > 0
    rho = torch.where(defined, (ra * rb).sum(-1) / denom.clamp_min(1e-300), 0.0)
    return rho.clamp(-1.0, 1.0), defined


# --------------------------------------------------------------------------- localisation
# Boxes are (x1, y1, x2, y2) in pixels of an (H, W) image (pixel-edge coordinates: pixel
# (i, j) covers [j, j+1) x [i, i+1)); a cell of an (h, w) map stands for the image region it
# covers and is represented by its centre. A centre on a box edge is inside.
def check_boxes_in_image(
    boxes: Tensor,
    image_size: tuple[int, int],
    *,
    strict: bool,
    image_index: Tensor | None = None,
) -> None:
    """Raise ``ValueError`` naming the first box that is not finite, leaves the image, or is
    inverted (``x1 > x2``; with ``strict`` also empty, ``x1 == x2``)."""
    if boxes.numel() == 0:
        return
    h, w = image_size
    x1, y1, x2, y2 = boxes.unbind(-1)
    inverted = (x1 >= x2) | (y1 >= y2) if strict else (x1 > x2) | (y1 > y2)
    bad = ~torch.isfinite(boxes).all(-1) | (x1 < 0) | (y1 < 0) | (x2 > w) | (y2 > h) | inverted
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        rel = "<" if strict else "<="
        which = f"box {i}" if image_index is None else f"a box of image {int(image_index[i])}"
        raise ValueError(
            f"Expected boxes (x1, y1, x2, y2) inside the {h}x{w} image with "
            f"0 <= x1 {rel} x2 <= {w} and 0 <= y1 {rel} y2 <= {h}, but got {which} = "
            f"{boxes[i].tolist()}."
        )


def cell_centres(n: int, extent: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Image coordinates of the centres of ``n`` cells along an axis of ``extent`` pixels,
    :math:`(k + \\tfrac12)\\, \\mathrm{extent} / n`."""
    return (torch.arange(n, device=device, dtype=dtype) + 0.5) * (extent / n)


def box_cell_masks(
    boxes: Tensor, grid_size: tuple[int, int], image_size: tuple[int, int]
) -> Tensor:
    """``(N, h, w)`` bool: the cells of an ``(h, w)`` grid whose centre lies in each of the
    ``(N, 4)`` floating-point boxes (computed in the boxes' dtype)."""
    h, w = grid_size
    cy = cell_centres(h, image_size[0], boxes.dtype, boxes.device)
    cx = cell_centres(w, image_size[1], boxes.dtype, boxes.device)
    x1, y1, x2, y2 = (boxes[:, i, None] for i in range(4))
    in_y = (cy[None] >= y1) & (cy[None] <= y2)  # (N, h)
    in_x = (cx[None] >= x1) & (cx[None] <= x2)  # (N, w)
    return in_y[:, :, None] & in_x[:, None, :]


def pointing_hits(
    saliency: Tensor,
    boxes: Tensor,
    image_index: Tensor,
    image_size: tuple[int, int],
    tolerance: float,
) -> Tensor:
    r"""Pointing game (Zhang et al. 2018): is the maximum of each map within ``tolerance``
    pixels of one of its boxes?

    The maximum is the first maximal cell in row-major order (``argmax``); its centre
    :math:`c` (in image pixels, in the boxes' dtype) hits box :math:`k` when

    .. math::
        \sqrt{d_x^2 + d_y^2} \le \tau, \quad
        d_x = \max(x_1 - c_x, 0) + \max(c_x - x_2, 0), \;
        d_y = \max(y_1 - c_y, 0) + \max(c_y - y_2, 0)

    (:math:`\tau = 0`: the centre lies in the box, edges included — exactly
    :func:`box_cell_masks` at the maximum).

    Args:
        saliency: ``(B, h, w)`` maps.
        boxes: ``(N, 4)`` floating-point boxes, on the maps' device.
        image_index: ``(N,)`` long, the map each box belongs to (maps may have 0 or many).
        image_size: ``(H, W)`` the boxes refer to.
        tolerance: :math:`\tau` in pixels.

    Returns:
        ``(B,)`` bool, False for maps without boxes.
    """
    b, h, w = saliency.shape
    peak = saliency.flatten(1).argmax(1)
    cy = ((peak // w).to(boxes.dtype) + 0.5) * (image_size[0] / h)
    cx = ((peak % w).to(boxes.dtype) + 0.5) * (image_size[1] / w)
    x1, y1, x2, y2 = boxes.unbind(1)
    px, py = cx[image_index], cy[image_index]
    dx = (x1 - px).clamp_min(0) + (px - x2).clamp_min(0)
    dy = (y1 - py).clamp_min(0) + (py - y2).clamp_min(0)
    box_hit = torch.hypot(dx, dy) <= tolerance
    hits = torch.zeros(b, device=saliency.device).index_add_(0, image_index, box_hit.float())
    return hits > 0


def positive_energy_share(saliency: Tensor, mask: Tensor) -> Tensor:
    r"""Energy pointing game: share of the positive attribution inside the region, per map.

    .. math::
        E_b = \frac{\sum_{p \in \mathrm{region}_b} \max(s_{b,p}, 0)}{\sum_p \max(s_{b,p}, 0)}

    Computed in the dtype of ``saliency`` ``(B, h, w)``; ``mask`` ``(B, h, w)`` bool is the
    region. A map without positive attribution scores 0 (nothing points at the object).
    """
    pos = saliency.clamp_min(0).flatten(1)
    total = pos.sum(1)
    inside = (pos * mask.flatten(1)).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(pos.dtype).tiny), 0.0)


# --------------------------------------------------------------------------- faithfulness
def trapezoid_auc(scores: Tensor, fractions: Tensor | None = None) -> Tensor:
    r"""Area under insertion / deletion curves over the perturbed fraction, trapezoid rule.

    .. math::
        \mathrm{AUC}_b = \sum_{i=1}^{n} \tfrac12 (y_{b,i-1} + y_{b,i}) (f_i - f_{i-1})

    Args:
        scores: ``(..., n+1)`` curve values :math:`y`.
        fractions: ``(n+1,)`` increasing fractions :math:`f` from 0 to 1 (a partial last step
            keeps its true width); ``None``: evenly spaced, :math:`f_i = i / n`.

    Returns:
        ``(...)`` areas.
    """
    if fractions is None:
        return torch.trapezoid(scores, dx=1.0 / (scores.shape[-1] - 1), dim=-1)
    return torch.trapezoid(scores, x=fractions.to(scores), dim=-1)


def score_change(original: Tensor, explained: Tensor, *, relative: bool) -> tuple[Tensor, Tensor]:
    r"""Per-sample drop and increase of a score when the input keeps only its explained part.

    .. math::
        \mathrm{drop} = \max(0, o - s) \;\big/\, o \ (\text{if relative}), \qquad
        \mathrm{increase} = [o < s]

    Grad-CAM++'s average drop is relative (``o`` is a softmax probability, > 0); M2IB's
    confidence drop (eq. 17) is absolute because its scores are cosine similarities, which can
    be 0 or negative. The increase (Grad-CAM++ / M2IB eq. 18) is the same indicator.

    Returns:
        ``(drop, increase)``, ``increase`` as bool.
    """
    drop = (original - explained).clamp_min(0)
    if relative:
        drop = drop / original.clamp_min(torch.finfo(original.dtype).tiny)
    return drop, original < explained
