"""``nn.Module`` forms of the explanation-guided penalties, pluggable into a classifier.

The formulas live in :mod:`lico_lightning.functional.explanation_guided`; these classes hold
the weight, the reduction and which ground-truth masks mark the regions that must not matter.
:data:`EXPLANATION_LOSSES` names them for ``LICOClassifier(explanation_losses={...})``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from lico_lightning._registry import Registry
from lico_lightning._validation import check_choice, check_positive
from lico_lightning.functional.explanation_guided import (
    PENALTY_REDUCTIONS,
    gradcam_mask_penalty,
    right_for_the_right_reasons_loss,
)

__all__ = [
    "EXPLANATION_LOSSES",
    "ExplanationLoss",
    "GradCAMMaskLoss",
    "RightForTheRightReasonsLoss",
    "create_explanation_loss",
    "list_explanation_losses",
]

#: The shortcut benchmark's regions that must not matter: the cue and the distractors.
DEFAULT_MASK_KEYS = ("cue_mask", "distractor_mask")


class ExplanationLoss(nn.Module):
    """Base of the pluggable explanation losses: a weighted penalty on a batch.

    A subclass sets :attr:`requires_input_grad` (the classifier then runs its forward pass on
    images that require grad) and implements :meth:`penalty`. The mask :math:`A` is the union
    of the ground-truth masks named by ``mask_keys``, read from the batch's ground-truth dict
    (the shortcut benchmark's last batch element).

    Args:
        weight: λ ≥ 0.
        reduction: ``"sum"`` over the batch (the papers' Σ_n), ``"mean"`` or ``"none"``.
        mask_keys: ground-truth keys whose union is the mask of regions that must not matter.
    """

    requires_input_grad: ClassVar[bool] = False

    def __init__(
        self,
        weight: float = 1.0,
        reduction: Literal["sum", "mean", "none"] = "sum",
        mask_keys: Sequence[str] = DEFAULT_MASK_KEYS,
    ) -> None:
        super().__init__()
        check_positive("weight", weight, strict=False)
        check_choice("reduction", reduction, PENALTY_REDUCTIONS)
        keys = [mask_keys] if isinstance(mask_keys, str) else list(mask_keys)
        if not keys or not all(isinstance(k, str) for k in keys):
            raise ValueError(
                f"Expected `mask_keys` to be a non-empty list of strings, but got {mask_keys!r}."
            )
        self.weight = float(weight)
        self.reduction = reduction
        self.mask_keys = tuple(keys)

    def missing_keys(self, ground_truth: Mapping[str, Any] | None) -> list[str]:
        """The ``mask_keys`` a batch's ground truth lacks (all of them without one)."""
        if ground_truth is None:
            return list(self.mask_keys)
        return [k for k in self.mask_keys if k not in ground_truth]

    def mask(self, ground_truth: Mapping[str, Any]) -> Tensor:
        """``(B, H, W)`` bool: the union of the ``mask_keys`` masks."""
        masks = [torch.as_tensor(ground_truth[k]).bool() for k in self.mask_keys]
        out = masks[0]
        for m in masks[1:]:
            out = out | m
        return out

    def penalty(
        self, images: Tensor, logits: Tensor, features: Tensor, targets: Tensor, mask: Tensor
    ) -> Tensor:
        """The weighted penalty from one forward pass (``features``: ``forward_features``)."""
        raise NotImplementedError  # pragma: no cover

    def extra_repr(self) -> str:
        return f"weight={self.weight}, reduction={self.reduction!r}, mask_keys={self.mask_keys}"


EXPLANATION_LOSSES: Registry[type[ExplanationLoss]] = Registry(
    "explanation loss", base=ExplanationLoss
)


def list_explanation_losses() -> list[str]:
    """Registered explanation-loss names, sorted.

    Example:
        >>> list_explanation_losses()
        ['gradcam_mask', 'rrr']
    """
    return EXPLANATION_LOSSES.names()


def create_explanation_loss(name: str, **options: Any) -> ExplanationLoss:
    """Build the explanation loss registered as ``name`` with its keyword ``options``.

    Example:
        >>> create_explanation_loss("rrr", weight=10.0)
        RightForTheRightReasonsLoss(weight=10.0, reduction='sum', mask_keys=('cue_mask', 'distractor_mask'))
    """
    loss: ExplanationLoss = EXPLANATION_LOSSES.create(name, **options)
    return loss


@EXPLANATION_LOSSES.register("rrr")
class RightForTheRightReasonsLoss(ExplanationLoss):
    r"""Right for the Right Reasons (Ross et al., 2017): masked input-gradient penalty.

    Calls :func:`~lico_lightning.functional.right_for_the_right_reasons_loss`:

    .. math::
        \lambda \sum_{n,d} \Big( A_{nd}\, \frac{\partial}{\partial x_{nd}}
            \sum_k \log p_{nk} \Big)^2

    Shapes:
        - logits: ``(B, K)`` computed from ``images`` ``(B, C, H, W)`` (requires grad).
        - mask: ``(B, H, W)`` or ``(B, C, H, W)``.
        - output: scalar, or ``(B,)`` for ``reduction="none"``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        >>> x = torch.randn(2, 3, 2, 2, generator=g, requires_grad=True)
        >>> loss_fn = RightForTheRightReasonsLoss(weight=10.0)
        >>> loss_fn(net(x), x, torch.ones(2, 2, 2, dtype=torch.bool)).shape
        torch.Size([])
    """

    requires_input_grad = True

    def forward(self, logits: Tensor, images: Tensor, mask: Tensor) -> Tensor:
        return right_for_the_right_reasons_loss(
            logits, images, mask, weight=self.weight, reduction=self.reduction
        )

    def penalty(
        self, images: Tensor, logits: Tensor, features: Tensor, targets: Tensor, mask: Tensor
    ) -> Tensor:
        return self(logits, images, mask)


@EXPLANATION_LOSSES.register("gradcam_mask")
class GradCAMMaskLoss(ExplanationLoss):
    r"""Penalty on the max-normalised Grad-CAM of the label inside a mask.

    Calls :func:`~lico_lightning.functional.gradcam_mask_penalty` on the backbone's last
    feature map (the layer the package's Grad-CAM explainer reads):

    .. math::
        \lambda \sum_{n,i,j} \big(A_{n,ij}\, \hat M_{n,ij}\big)^2, \qquad
        \hat M_n = M_n / (\max M_n + \epsilon)

    Args:
        weight: λ ≥ 0.
        reduction: ``"sum"``, ``"mean"`` or ``"none"``.
        mask_keys: ground-truth keys whose union is the mask.
        eps: ε of the normalisation.

    Shapes:
        - logits: ``(B, K)`` computed from ``activations`` ``(B, N, h, w)``.
        - targets: ``(B,)`` long; mask: ``(B, H, W)``.
        - output: scalar, or ``(B,)`` for ``reduction="none"``.

    Example:
        >>> conv, head = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Linear(4, 3)
        >>> fmap = conv(torch.randn(2, 3, 8, 8)).relu()
        >>> loss_fn = GradCAMMaskLoss(weight=1.0)
        >>> mask = torch.zeros(2, 8, 8, dtype=torch.bool)
        >>> loss_fn(head(fmap.mean((2, 3))), fmap, torch.tensor([0, 1]), mask).item()
        0.0
    """

    def __init__(
        self,
        weight: float = 1.0,
        reduction: Literal["sum", "mean", "none"] = "sum",
        mask_keys: Sequence[str] = DEFAULT_MASK_KEYS,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(weight, reduction, mask_keys)
        check_positive("eps", eps)
        self.eps = float(eps)

    def forward(self, logits: Tensor, activations: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
        return gradcam_mask_penalty(
            logits,
            activations,
            targets,
            mask,
            weight=self.weight,
            reduction=self.reduction,
            eps=self.eps,
        )

    def penalty(
        self, images: Tensor, logits: Tensor, features: Tensor, targets: Tensor, mask: Tensor
    ) -> Tensor:
        if features.ndim != 4:
            raise ValueError(
                "Expected a CNN feature map (B, N, h, w) for the Grad-CAM mask loss, but got "
                f"{tuple(features.shape)}."
            )
        return self(logits, features, targets, mask)
