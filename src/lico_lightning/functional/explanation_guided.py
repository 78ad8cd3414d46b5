r"""Explanation-guided training penalties: the model must not look where a mask says.

Pure torch, no state. Both penalties are differentiable in the model parameters (they build
the input / feature-map gradient with ``create_graph=True``, so ``loss.backward()`` is a
second-order backward) and take a mask ``A`` of the regions that **must not matter**, e.g.
the shortcut benchmark's ``cue_mask | distractor_mask``. Masks are data: they are detached and
never receive a gradient.

The batched gradients are per-sample gradients when samples do not interact in the forward
pass (eval-mode BatchNorm, no BatchNorm, or a feature map read after the last BatchNorm as in
:func:`gradcam_mask_penalty`). A train-mode BatchNorm before the differentiated tensor couples
the samples of a batch (as it couples their cross-entropy gradients); the penalty then also
contains the batch-statistics path, as in every batched implementation of these losses.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lico_lightning._validation import check_choice, check_positive, check_tensor
from lico_lightning.functional.cam import (
    grad_cam_weights,
    upsample_saliency,
    weighted_activation_map,
)

__all__ = ["PENALTY_REDUCTIONS", "gradcam_mask_penalty", "right_for_the_right_reasons_loss"]

PENALTY_REDUCTIONS = ("sum", "mean", "none")


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        return per_sample.mean()
    return per_sample


def _check_mask(mask: object, batch: int, spatial: tuple[int, int], channels: int | None) -> Tensor:
    """``(B, H, W)`` or ``(B, C, H, W)`` (bool or float) -> a detached float mask."""
    mask = check_tensor("mask", mask, (3, 4))
    ok = mask.shape[0] == batch and tuple(mask.shape[-2:]) == spatial
    if mask.ndim == 4:
        ok = ok and channels is not None and mask.shape[1] in (1, channels)
    if not ok:
        expected = f"(B, H, W) = ({batch}, {spatial[0]}, {spatial[1]})"
        if channels is not None:
            expected += f" or (B, C, H, W) with C in (1, {channels})"
        raise ValueError(f"Expected `mask` of shape {expected}, but got {tuple(mask.shape)}.")
    return mask.detach().float()


def _check_logits(logits: object, batch: int) -> Tensor:
    logits = check_tensor("logits", logits, 2, floating=True)
    if logits.shape[0] != batch:
        raise ValueError(
            f"Expected `logits` of shape (B, num_classes) with B = {batch}, but got "
            f"{tuple(logits.shape)}."
        )
    if not logits.requires_grad:
        raise ValueError(
            "Expected `logits` computed (with grad enabled) from the differentiated tensor, but "
            "got logits that do not require grad."
        )
    return logits


def right_for_the_right_reasons_loss(
    logits: Tensor,
    images: Tensor,
    mask: Tensor,
    weight: float = 1.0,
    reduction: Literal["sum", "mean", "none"] = "sum",
) -> Tensor:
    r"""The input-gradient penalty of "Right for the Right Reasons" (Ross et al., IJCAI 2017).

    .. math::
        \mathcal{R}_n = \lambda \sum_{d} \Big( A_{nd}\,
            \frac{\partial}{\partial x_{nd}} \sum_{k} \log p_{nk} \Big)^2,
        \qquad p_n = \operatorname{softmax}(z_n)

    summed over the batch (``reduction="sum"``, the paper's :math:`\sum_{n,d}`), averaged
    (``"mean"``) or returned per sample (``"none"``). The full RRR objective is
    cross-entropy plus this term. The gradient is built with ``create_graph=True``, so the
    result trains the model (a double backward).

    Args:
        logits: ``(B, K)`` logits computed from ``images`` with grad enabled.
        images: ``(B, C, H, W)`` float input that requires grad (the tensor ``logits`` was
            computed from).
        mask: ``(B, H, W)`` (broadcast over channels) or ``(B, C, H, W)``, bool or float:
            :math:`A`, 1 where the input must not matter. Detached (never trained).
        weight: :math:`\lambda \ge 0`.
        reduction: ``"sum"``, ``"mean"`` or ``"none"`` (``(B,)``).

    Returns:
        Scalar, or ``(B,)`` for ``reduction="none"``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        >>> x = torch.randn(2, 3, 2, 2, generator=g, requires_grad=True)
        >>> mask = torch.zeros(2, 2, 2, dtype=torch.bool)
        >>> right_for_the_right_reasons_loss(net(x), x, mask).item()  # nothing masked
        0.0
        >>> loss = right_for_the_right_reasons_loss(net(x), x, ~mask, weight=10.0)
        >>> loss.backward()  # second order: reaches the weights
        >>> net[1].weight.grad.abs().sum() > 0
        tensor(True)
    """
    images = check_tensor("images", images, 4, floating=True)
    logits = _check_logits(logits, images.shape[0])
    if not images.requires_grad:
        raise ValueError(
            "Expected `images` that require grad (call `images.requires_grad_()` before the "
            "forward pass), but got a tensor with requires_grad=False."
        )
    mask = _check_mask(mask, images.shape[0], (images.shape[-2], images.shape[-1]), images.shape[1])
    check_positive("weight", weight, strict=False)
    check_choice("reduction", reduction, PENALTY_REDUCTIONS)
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    log_probs = F.log_softmax(logits, dim=-1).sum()
    (grad,) = torch.autograd.grad(log_probs, images, create_graph=True)
    per_sample = (mask.to(grad.dtype) * grad).square().flatten(1).sum(1)
    return _reduce(weight * per_sample, reduction)


def gradcam_mask_penalty(
    logits: Tensor,
    activations: Tensor,
    targets: Tensor,
    mask: Tensor,
    weight: float = 1.0,
    reduction: Literal["sum", "mean", "none"] = "sum",
    eps: float = 1e-8,
) -> Tensor:
    r"""Penalty on the normalised Grad-CAM of the target class inside a mask.

    The explanatory-interactive-learning "right reasons" term on Grad-CAM (Schramowski et al.,
    Nature Machine Intelligence 2020; GradMask, Simpson et al. 2019), with the package's
    Grad-CAM (:func:`~lico_lightning.functional.grad_cam_weights`,
    :func:`~lico_lightning.functional.weighted_activation_map`,
    :func:`~lico_lightning.functional.upsample_saliency`):

    .. math::
        M_n = \operatorname{up}\!\Big(\operatorname{ReLU}\big(\textstyle\sum_c
            \alpha_{nc} F_{nc}\big)\Big), \quad
        \alpha_{nc} = \frac{1}{hw}\sum_{ij} \frac{\partial z_{n y_n}}{\partial F_{nc ij}}, \quad
        \hat M_n = \frac{M_n}{\max_{ij} M_{n,ij} + \epsilon}, \quad
        \mathcal{R}_n = \lambda \sum_{ij} \big(A_{n,ij}\, \hat M_{n,ij}\big)^2

    **Normalisation:** each map is divided by its own maximum (plus ``eps``), so
    :math:`\hat M \in [0, 1]` and the penalty measures the *share* of the explanation that
    falls in the mask, not its scale (a model could otherwise shrink the map instead of
    moving it). ``up`` is the bilinear resize to the mask's ``(H, W)``. The gradients
    :math:`\partial z / \partial F` are built with ``create_graph=True``: the penalty
    back-propagates through the Grad-CAM weights (double backward) as well as through
    :math:`F`.

    Args:
        logits: ``(B, K)`` logits computed from ``activations`` with grad enabled.
        activations: ``(B, N, h, w)`` the feature map Grad-CAM reads (for the package's
            backbones, ``forward_features``).
        targets: ``(B,)`` long, the class :math:`y_n` whose Grad-CAM is penalised (the label).
        mask: ``(B, H, W)`` bool or float :math:`A`, 1 where the explanation must not be.
            Detached (never trained).
        weight: :math:`\lambda \ge 0`.
        reduction: ``"sum"`` over the batch, ``"mean"`` or ``"none"`` (``(B,)``).
        eps: :math:`\epsilon > 0` of the normalisation (an all-zero map stays zero).

    Returns:
        Scalar, or ``(B,)`` for ``reduction="none"``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> conv, head = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Linear(4, 3)
        >>> x = torch.randn(2, 3, 8, 8, generator=g)
        >>> fmap = conv(x).relu()
        >>> logits = head(fmap.mean((2, 3)))
        >>> mask = torch.zeros(2, 8, 8, dtype=torch.bool)
        >>> mask[:, :4] = True  # the top half must not matter
        >>> loss = gradcam_mask_penalty(logits, fmap, torch.tensor([0, 2]), mask)
        >>> loss.backward()  # through the Grad-CAM weights too
        >>> head.weight.grad.abs().sum() > 0
        tensor(True)
    """
    activations = check_tensor("activations", activations, 4, floating=True)
    b = activations.shape[0]
    logits = _check_logits(logits, b)
    targets = check_tensor("targets", targets, 1)
    if targets.shape[0] != b or targets.dtype != torch.long:
        raise ValueError(
            f"Expected long `targets` of shape ({b},), but got {targets.dtype} of shape "
            f"{tuple(targets.shape)}."
        )
    mask = check_tensor("mask", mask, 3)
    mask = _check_mask(mask, b, (mask.shape[-2], mask.shape[-1]), None)
    check_positive("weight", weight, strict=False)
    check_positive("eps", eps)
    check_choice("reduction", reduction, PENALTY_REDUCTIONS)
    score = logits.gather(1, targets[:, None]).sum()
    (grad,) = torch.autograd.grad(score, activations, create_graph=True)
    cam = weighted_activation_map(activations, grad_cam_weights(grad))
    cam = upsample_saliency(cam, (mask.shape[-2], mask.shape[-1]))
    cam = cam / (cam.flatten(1).amax(1).view(-1, 1, 1) + eps)
    per_sample = (mask.to(cam.dtype) * cam).square().flatten(1).sum(1)
    return _reduce(weight * per_sample, reduction)
