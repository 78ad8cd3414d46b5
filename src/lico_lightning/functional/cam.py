r"""Class-activation-map algebra shared by the CAM explainers and RISE.

Pure torch, no state, no hooks. ``activations`` / ``gradients`` are feature maps
``(B, N, h, w)`` (N feature maps) read at the explainer's target layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lico_lightning._validation import (
    check_int_pair,
    check_positive,
    check_probability,
    check_tensor,
)

__all__ = [
    "draw_rise_parameters",
    "grad_cam_plus_plus_weights",
    "grad_cam_weights",
    "rise_masks",
    "upsample_saliency",
    "weighted_activation_map",
]


def _check_pair(activations: Tensor, gradients: Tensor) -> None:
    check_tensor("activations", activations, 4, floating=True)
    check_tensor("gradients", gradients, 4, floating=True)
    if activations.shape != gradients.shape:
        raise ValueError(
            "Expected `activations` and `gradients` of the same shape (B, N, h, w), but got "
            f"{tuple(activations.shape)} and {tuple(gradients.shape)}."
        )


def grad_cam_weights(gradients: Tensor) -> Tensor:
    r"""Grad-CAM channel weights (Selvaraju et al., 2017): spatially averaged gradients.

    .. math::
        \alpha_n^c = \frac{1}{hw} \sum_{i,j} \frac{\partial y^c}{\partial A^n_{ij}}

    Args:
        gradients: ``(B, N, h, w)`` gradients of the class score w.r.t. the activations.

    Returns:
        ``(B, N)``.

    Example:
        >>> grad_cam_weights(torch.ones(1, 2, 3, 3))
        tensor([[1., 1.]])
    """
    check_tensor("gradients", gradients, 4, floating=True)
    return gradients.mean(dim=(2, 3))


def grad_cam_plus_plus_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    r"""Grad-CAM++ channel weights (Chattopadhyay et al., 2018), exponential-score closed form.

    .. math::
        a^{nc}_{ij} = \frac{g_{ij}^2}{2 g_{ij}^2 + \sum_{a,b} A^n_{ab}\, g_{ij}^3}, \qquad
        w^c_n = \sum_{i,j} a^{nc}_{ij} \operatorname{ReLU}(g_{ij})

    with :math:`g = \partial y^c / \partial A^n`; :math:`a = 0` where :math:`g = 0` (and where
    the denominator vanishes).

    Args:
        activations: ``(B, N, h, w)``.
        gradients: ``(B, N, h, w)``.

    Returns:
        ``(B, N)``.

    Example:
        >>> grad_cam_plus_plus_weights(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
        tensor([[0.6667]])
    """
    _check_pair(activations, gradients)
    g2 = gradients.pow(2)
    g3 = g2 * gradients
    denom = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1.0), 0.0)
    return (alpha * gradients.clamp_min(0)).sum(dim=(2, 3))


def weighted_activation_map(activations: Tensor, weights: Tensor) -> Tensor:
    r"""ReLU of the weighted sum of feature maps.

    .. math::
        L^c = \operatorname{ReLU}\Big(\sum_n w_n^c A^n\Big)

    Args:
        activations: ``(B, N, h, w)``.
        weights: ``(B, N)``.

    Returns:
        ``(B, h, w)``.

    Example:
        >>> weighted_activation_map(torch.ones(1, 2, 1, 1), torch.tensor([[1.0, -3.0]]))
        tensor([[[0.]]])
    """
    check_tensor("activations", activations, 4, floating=True)
    check_tensor("weights", weights, 2, floating=True)
    if weights.shape != activations.shape[:2]:
        raise ValueError(
            f"Expected `weights` of shape (B, N) = {tuple(activations.shape[:2])}, but got {tuple(weights.shape)}."
        )
    return torch.einsum("bn,bnhw->bhw", weights, activations).clamp_min(0)


def upsample_saliency(saliency: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly resize maps ``(B, h, w)`` to ``(B, H, W)`` (``align_corners=False``).

    Example:
        >>> upsample_saliency(torch.ones(2, 7, 7), (32, 32)).shape
        torch.Size([2, 32, 32])
    """
    check_tensor("saliency", saliency, 3, floating=True)
    size = check_int_pair("size", size)
    if tuple(saliency.shape[-2:]) == size:
        return saliency
    return _resize_maps(saliency, size)


def _resize_maps(maps: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resize ``(..., h, w)`` maps to ``(..., H, W)`` with ``F.interpolate``.

    The one resizing convention of the package (CAMs, RISE masks, M2IB and interaction patch
    maps): ``align_corners=False`` for the interpolating modes (``"bilinear"``,
    ``"bicubic"``), nothing extra for ``"nearest"`` and the like.
    """
    size = (int(size[0]), int(size[1]))
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    return F.interpolate(flat, size=size, mode=mode, **kwargs).reshape(*maps.shape[:-2], *size)


def rise_masks(grids: Tensor, shifts: Tensor, size: tuple[int, int]) -> Tensor:
    r"""Smooth random RISE masks (Petsiuk et al., 2018) from binary grids and random shifts.

    Each binary grid ``(s, s)`` is bilinearly upsampled to ``((s+1)·c_h, (s+1)·c_w)`` with cell
    size :math:`c = \lceil H / s \rceil` and cropped to ``(H, W)`` at offset ``shifts`` (each
    in ``[0, c)``). Drawing ``grids`` and ``shifts`` (see :func:`draw_rise_parameters`) is kept
    separate so that masks can be built chunk by chunk from one seeded draw.

    Args:
        grids: ``(M, s, s)`` float in {0, 1}.
        shifts: ``(M, 2)`` long ``(dy, dx)`` offsets.
        size: ``(H, W)``.

    Returns:
        ``(M, H, W)`` masks in ``[0, 1]``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> grids, shifts = draw_rise_parameters(3, 4, 0.5, (16, 16), g)
        >>> rise_masks(grids, shifts, (16, 16)).shape
        torch.Size([3, 16, 16])
    """
    check_tensor("grids", grids, 3, floating=True)
    check_tensor("shifts", shifts, 2)
    h, w = size
    s = grids.shape[-1]
    ch, cw = math.ceil(h / s), math.ceil(w / s)
    up = _resize_maps(grids, ((s + 1) * ch, (s + 1) * cw))
    rows = shifts[:, 0, None] + torch.arange(h, device=grids.device)
    cols = shifts[:, 1, None] + torch.arange(w, device=grids.device)
    idx = torch.arange(grids.shape[0], device=grids.device)
    return up[idx[:, None, None], rows[:, :, None], cols[:, None, :]]


def draw_rise_parameters(
    num_masks: int,
    grid_size: int,
    probability: float,
    size: tuple[int, int],
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Draw RISE's binary grids ``(M, s, s)`` and crop shifts ``(M, 2)`` from ``generator`` (CPU).

    Example:
        >>> grids, shifts = draw_rise_parameters(2, 7, 0.5, (32, 32), torch.Generator().manual_seed(0))
        >>> grids.shape, shifts.shape
        (torch.Size([2, 7, 7]), torch.Size([2, 2]))
    """
    check_positive("num_masks", num_masks)
    check_positive("grid_size", grid_size)
    check_probability("probability", probability)
    h, w = size
    ch, cw = math.ceil(h / grid_size), math.ceil(w / grid_size)
    grids = (torch.rand(num_masks, grid_size, grid_size, generator=generator) < probability).float()
    dy = torch.randint(0, ch, (num_masks,), generator=generator)
    dx = torch.randint(0, cw, (num_masks,), generator=generator)
    return grids, torch.stack([dy, dx], 1)
