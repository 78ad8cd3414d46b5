r"""Localisation metrics: pointing game and energy pointing game, for classifier saliency maps
and dual-encoder grounding maps alike (one formula each, any box format).

**Regions** (argument ``boxes``) come in three formats, each row ``(x1, y1, x2, y2)`` in
pixel-edge coordinates of an ``image_size = (H, W)`` image (torchvision / COCO convention:
pixel ``(row i, col j)`` covers ``[j, j+1) x [i, i+1)``; ``(0, 0, W, H)`` is the whole image;
``0 <= x1 <= x2 <= W``, ``0 <= y1 <= y2 <= H``):

* a list of ``B`` tensors ``(K_i, 4)`` — any number of boxes per image (classifier data sets);
  an image with ``K_i = 0`` has no region and is **skipped** (neither hit nor miss);
* a ``(B, 4)`` tensor — one box per map (grounding: the object of a caption);
* a ``(B, h, w)`` bool mask on the map's own grid — the region cell by cell.

A cell of an ``(h, w)`` map stands for the image region it covers and is represented by its
centre, :math:`((j + \tfrac12) W / w, (i + \tfrac12) H / h)`; a centre on a box edge is inside.
So a pixel-resolution map compares pixel by pixel, and a patch map counts the patches whose
centre lies in the box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from lico_lightning._validation import (
    check_choice,
    check_finite,
    check_int_pair,
    check_real,
    check_tensor,
)

__all__ = ["DEFAULT_TOLERANCE", "box_to_mask", "energy_pointing_game", "pointing_game"]

#: Zhang et al. (2018) pointing-game tolerance in pixels.
DEFAULT_TOLERANCE = 15.0

Boxes = Sequence[Tensor] | Tensor


# --------------------------------------------------------------------------- public
def box_to_mask(
    boxes: Tensor, grid_size: tuple[int, int], image_size: tuple[int, int] | None = None
) -> Tensor:
    r"""Cells of an ``(h, w)`` grid whose centre lies in a box.

    .. math::
        m_{b,i,j} = [x_1 \le (j + \tfrac12) \tfrac{W}{w} \le x_2] \,
                    [y_1 \le (i + \tfrac12) \tfrac{H}{h} \le y_2]

    Args:
        boxes: ``(B, 4)`` non-empty boxes ``(x1, y1, x2, y2)`` in pixels (``x1 < x2``,
            ``y1 < y2``).
        grid_size: ``(h, w)`` of the grid (a patch grid, or the pixel grid itself).
        image_size: ``(H, W)`` of the image the boxes refer to (default: ``grid_size``).

    Returns:
        ``(B, h, w)`` bool mask.

    Example:
        >>> box_to_mask(torch.tensor([[0.0, 0.0, 16.0, 8.0]]), (4, 4), (32, 32)).int()
        tensor([[[1, 1, 0, 0],
                 [0, 0, 0, 0],
                 [0, 0, 0, 0],
                 [0, 0, 0, 0]]], dtype=torch.int32)
    """
    grid = check_int_pair("grid_size", grid_size)
    size = check_int_pair("image_size", image_size if image_size is not None else grid_size)
    boxes = _check_box_tensor(boxes, size, strict=True)
    return _box_cell_masks(boxes, grid, size)


def pointing_game(
    saliency: Tensor,
    boxes: Boxes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    image_size: tuple[int, int] | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    r"""Pointing game (Zhang et al. 2018): is the map's maximum on (or near) the object?

    The maximum is the first maximal cell in row-major order (``argmax``; this is the tie rule
    — a constant map points at the top-left cell). Its centre :math:`c` is a **hit** when it
    lies within :math:`\tau` = ``tolerance`` pixels (Euclidean) of any of the map's regions:

    .. math::
        \text{hit}_b = \exists k: \sqrt{d_x^2 + d_y^2} \le \tau, \quad
        d_x = \max(x_1 - c_x, 0) + \max(c_x - x_2, 0), \;
        d_y = \max(y_1 - c_y, 0) + \max(c_y - y_2, 0)

    and the accuracy is Hits / (Hits + Misses). Classifier saliency follows Zhang et al.
    (``tolerance=15`` px, the default, with every box of the image); the dual-encoder grounding
    metric PGA (second-order attributions paper §4.1) is the same formula with ``tolerance=0``
    (the cell lies in the object's box) on a patch or pixel grid. A mask region is the union of
    its cells' rectangles.

    Args:
        saliency: ``(B, h, w)`` finite maps (pixel or patch resolution).
        boxes: per-image box list, ``(B, 4)`` boxes, or ``(B, h, w)`` bool masks (see module
            docstring).
        tolerance: :math:`\tau` in pixels of ``image_size`` (0: the centre must be inside).
        image_size: ``(H, W)`` the boxes refer to (default: the map's own size).
        reduction: ``"mean"`` → accuracy over the maps that have a region (ValueError if none
            has); ``"none"`` → ``(B,)`` hits as 1.0 / 0.0, and NaN for a map without a region
            (only possible with a box list; the ``"mean"`` leaves it out).

    Returns:
        A scalar, or ``(B,)``.

    Example:
        >>> sal = torch.zeros(2, 40, 40); sal[0, 5, 5] = 1; sal[1, 30, 30] = 1
        >>> box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
        >>> pointing_game(sal, [box, box], reduction="none")
        tensor([1., 0.])
        >>> pointing_game(sal, torch.cat([box, box]), tolerance=0.0)
        tensor(0.5000)
    """
    check_choice("reduction", reduction, ("mean", "none"))
    tolerance = check_real("tolerance", tolerance, low=0.0, strict=False)
    flat, index, valid, size, _ = _regions(saliency, boxes, image_size)
    hits = _pointing_hits(saliency, flat, index, size, tolerance).to(_value_dtype(saliency))
    return _reduce(hits, valid, reduction, "pointing_game")


def energy_pointing_game(
    saliency: Tensor,
    boxes: Boxes,
    *,
    image_size: tuple[int, int] | None = None,
    reduction: Literal["mean", "median", "none"] = "mean",
) -> Tensor:
    r"""Energy pointing game: share of the positive attribution inside the map's regions.

    .. math::
        E_b = \frac{\sum_{p \in \cup_k \text{region}_k} \max(s_{b,p}, 0)}{\sum_p \max(s_{b,p}, 0)}

    (Wang et al., Score-CAM 2020, for classifier saliency over the union of the image's boxes;
    PGE of the second-order attributions paper for grounding, whose median over a data set is
    mPGE.) A map without positive attribution scores 0 (nothing points at the object); a
    region covering no cell centre scores 0. Computed in float32 (float64 for float64 maps).

    Args:
        saliency: ``(B, h, w)`` finite maps.
        boxes: per-image box list, ``(B, 4)`` boxes, or ``(B, h, w)`` bool masks.
        image_size: ``(H, W)`` the boxes refer to (default: the map's own size).
        reduction: ``"mean"`` or ``"median"`` (lower median for an even count, like
            ``torch.median``) over the maps that have a region (ValueError if none has), or
            ``"none"`` → ``(B,)``, NaN for a map without a region.

    Returns:
        A scalar, or ``(B,)``.

    Example:
        >>> sal = torch.zeros(1, 4, 4); sal[0, 0, 0] = 3.0; sal[0, 3, 3] = 1.0
        >>> energy_pointing_game(sal, [torch.tensor([[0.0, 0.0, 2.0, 2.0]])])
        tensor(0.7500)
    """
    check_choice("reduction", reduction, ("mean", "median", "none"))
    flat, index, valid, size, region = _regions(saliency, boxes, image_size)
    if region is None:
        b, h, w = saliency.shape
        cells = _box_cell_masks(flat, (h, w), size).to(saliency.dtype)
        region = torch.zeros(b, h, w, dtype=saliency.dtype, device=saliency.device)
        region = region.index_add_(0, index, cells) > 0
    energy = _positive_energy_share(saliency.to(_value_dtype(saliency)), region)
    return _reduce(energy, valid, reduction, "energy_pointing_game")


# --------------------------------------------------------------------------- cores
def _value_dtype(saliency: Tensor) -> torch.dtype:
    return torch.promote_types(saliency.dtype, torch.float32)


def _cell_centres(n: int, extent: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Image coordinates of the centres of ``n`` cells along an axis of ``extent`` pixels."""
    return (torch.arange(n, device=device, dtype=dtype) + 0.5) * (extent / n)


def _box_cell_masks(
    boxes: Tensor, grid_size: tuple[int, int], image_size: tuple[int, int]
) -> Tensor:
    """``(N, h, w)`` bool: the cells whose centre lies in each of the ``(N, 4)`` boxes."""
    h, w = grid_size
    cy = _cell_centres(h, image_size[0], boxes.dtype, boxes.device)
    cx = _cell_centres(w, image_size[1], boxes.dtype, boxes.device)
    x1, y1, x2, y2 = (boxes[:, i, None] for i in range(4))
    in_y = (cy[None] >= y1) & (cy[None] <= y2)  # (N, h)
    in_x = (cx[None] >= x1) & (cx[None] <= x2)  # (N, w)
    return in_y[:, :, None] & in_x[:, None, :]


def _pointing_hits(
    saliency: Tensor,
    boxes: Tensor,
    image_index: Tensor,
    image_size: tuple[int, int],
    tolerance: float,
) -> Tensor:
    """``(B,)`` bool: the centre of each map's first maximal cell lies within ``tolerance`` of
    one of its ``(N, 4)`` boxes (``image_index (N,)``: the map of each box)."""
    b, h, w = saliency.shape
    peak = saliency.flatten(1).argmax(1)
    cy = ((peak // w).to(boxes.dtype) + 0.5) * (image_size[0] / h)
    cx = ((peak % w).to(boxes.dtype) + 0.5) * (image_size[1] / w)
    x1, y1, x2, y2 = boxes.unbind(1)
    px, py = cx[image_index], cy[image_index]
    dx = (x1 - px).clamp_min(0) + (px - x2).clamp_min(0)
    dy = (y1 - py).clamp_min(0) + (py - y2).clamp_min(0)
    box_hit = (torch.hypot(dx, dy) <= tolerance).to(saliency.dtype)
    hits = torch.zeros(b, dtype=saliency.dtype, device=saliency.device)
    return hits.index_add_(0, image_index, box_hit) > 0


def _positive_energy_share(saliency: Tensor, region: Tensor) -> Tensor:
    """Share of the positive part of each ``(B, h, w)`` map inside the bool ``region``."""
    pos = saliency.clamp_min(0).flatten(1)
    total = pos.sum(1)
    inside = (pos * region.flatten(1)).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(pos.dtype).tiny), 0.0)


def _reduce(values: Tensor, valid: Tensor, reduction: str, name: str) -> Tensor:
    if reduction == "none":
        return torch.where(valid, values, float("nan"))
    kept = values[valid]
    if kept.numel() == 0:
        raise ValueError(
            f"Expected at least one map with a region for {name}, but got none (every box list "
            "was empty); use reduction='none' to score maps one by one."
        )
    return kept.mean() if reduction == "mean" else kept.median()


# --------------------------------------------------------------------------- checks
def _regions(
    saliency: Tensor, boxes: Boxes, image_size: tuple[int, int] | None
) -> tuple[Tensor, Tensor, Tensor, tuple[int, int], Tensor | None]:
    """Validate; return the regions as flat boxes ``(N, 4)`` in image pixels, the map of each
    ``(N,)``, which maps have a region ``(B,)``, the image size the boxes refer to, and the
    mask when one was given (it also becomes one box per True cell: the cell's rectangle)."""
    check_tensor("saliency", saliency, ndim=3, floating=True)
    check_finite("saliency", saliency)
    b, h, w = saliency.shape
    device = saliency.device
    size = check_int_pair("image_size", image_size if image_size is not None else (h, w))
    if isinstance(boxes, Tensor) and boxes.ndim == 3:  # (B, h, w) masks
        if boxes.dtype != torch.bool or tuple(boxes.shape) != (b, h, w):
            raise ValueError(
                f"Expected a mask `boxes` of dtype bool and shape ({b}, {h}, {w}), but got "
                f"{boxes.dtype} {tuple(boxes.shape)}."
            )
        index, rows, cols = boxes.to(device).nonzero(as_tuple=True)
        sy, sx = size[0] / h, size[1] / w
        dtype = _value_dtype(saliency)
        flat = torch.stack([cols * sx, rows * sy, (cols + 1) * sx, (rows + 1) * sy], 1).to(dtype)
        mask = boxes.to(device)
        return flat, index, torch.ones(b, dtype=torch.bool, device=device), size, mask
    if isinstance(boxes, Tensor):  # (B, 4): one box per map
        if boxes.ndim != 2 or boxes.shape[0] != b:
            raise ValueError(
                f"Expected `boxes` of shape (B, 4) with batch size {b} like `saliency`, a list "
                f"of B (K_i, 4) tensors or (B, h, w) bool masks, but got {tuple(boxes.shape)}."
            )
        flat = _check_box_tensor(boxes, size, strict=False).to(device)
        index = torch.arange(b, device=device)
        return flat, index, torch.ones(b, dtype=torch.bool, device=device), size, None
    if not isinstance(boxes, Sequence) or isinstance(boxes, (str, bytes)):
        raise TypeError(
            "Expected `boxes` to be a list of B tensors (K_i, 4), a (B, 4) tensor or (B, h, w) "
            f"bool masks, but got {type(boxes).__name__}."
        )
    if len(boxes) != b:
        raise ValueError(
            f"Expected `boxes` to hold one (K_i, 4) tensor per image ({b}), but got {len(boxes)}."
        )
    for i, box in enumerate(boxes):
        if not isinstance(box, Tensor):
            raise TypeError(
                f"Expected `boxes[{i}]` to be a torch.Tensor, but got {type(box).__name__}."
            )
        if not (box.ndim == 2 and box.shape[1] == 4) and box.numel() != 0:
            raise ValueError(f"Expected `boxes[{i}]` of shape (K, 4), but got {tuple(box.shape)}.")
    dtype = _value_dtype(saliency)
    parts = [box.reshape(-1, 4).to(device=device, dtype=dtype) for box in boxes]
    flat = torch.cat(parts) if parts else torch.zeros(0, 4, dtype=dtype, device=device)
    counts = torch.tensor([p.shape[0] for p in parts], dtype=torch.long, device=device)
    index = torch.repeat_interleave(torch.arange(b, device=device), counts)
    _check_in_image(flat, size, strict=False, image_index=index)
    return flat, index, counts > 0, size, None


def _check_box_tensor(boxes: Tensor, image_size: tuple[int, int], *, strict: bool) -> Tensor:
    """``(N, 4)`` boxes inside the image, as floating point (float32 for integer boxes)."""
    check_tensor("boxes", boxes, ndim=2)
    if boxes.shape[1] != 4:
        raise ValueError(
            f"Expected `boxes` of shape (B, 4) as (x1, y1, x2, y2), but got {tuple(boxes.shape)}."
        )
    boxes = boxes if boxes.is_floating_point() else boxes.to(torch.float32)
    _check_in_image(boxes, image_size, strict=strict)
    return boxes


def _check_in_image(
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
