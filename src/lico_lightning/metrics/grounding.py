"""Grounding / faithfulness metrics for dual-encoder explanations (``torchmetrics.Metric``).

Accumulators over the formulas in :mod:`lico_lightning.functional.grounding`; every state is
reduced across processes (sums with ``dist_reduce_fx="sum"``, per-sample values for medians
with ``"cat"``), so values under DDP equal those of one process over all samples.

* :class:`PointingGameAccuracy` — PGA; :class:`PointingGameEnergy` — mean PGE or mPGE.
* :class:`ConditionalInsertionAUC` / :class:`ConditionalDeletionAUC` — mean area under
  conditional insertion / deletion curves: CII and CID when the image is perturbed, CTI and CTD
  when the caption is (curves from
  :func:`lico_lightning.explain.conditional_perturbation_curves`).
* :class:`ConfidenceDrop` / :class:`ConfidenceIncrease` — M2IB eqs. 17–18.
"""

from __future__ import annotations

from typing import Literal

import torch  # noqa: F401 - the doctest examples use it
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lico_lightning._validation import check_choice, check_int_pair
from lico_lightning.functional.grounding import (
    confidence_drop,
    confidence_increase,
    insertion_deletion_auc,
    pointing_game_accuracy,
    pointing_game_energy,
)
from lico_lightning.metrics._mean import _MeanOfValues

__all__ = [
    "ConditionalDeletionAUC",
    "ConditionalInsertionAUC",
    "ConfidenceDrop",
    "ConfidenceIncrease",
    "PointingGameAccuracy",
    "PointingGameEnergy",
]


class PointingGameAccuracy(_MeanOfValues):
    """Pointing game accuracy (PGA): share of maps whose maximum lies in the object's box.

    Args:
        image_size: ``(H, W)`` the boxes refer to (default: the maps' own size, i.e. maps at
            pixel resolution).

    Example:
        >>> metric = PointingGameAccuracy(image_size=(32, 32))
        >>> sal = torch.zeros(2, 4, 4)
        >>> sal[0, 0, 0] = 1.0
        >>> sal[1, 3, 3] = 1.0
        >>> metric.update(sal, torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 2))
        >>> metric.compute()
        tensor(0.5000)
    """

    higher_is_better = True
    is_differentiable = False

    def __init__(self, image_size: tuple[int, int] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_size = None if image_size is None else check_int_pair("image_size", image_size)

    def update(self, saliency: Tensor, target: Tensor) -> None:
        """Add ``(B, h, w)`` maps and ``(B, 4)`` boxes (or ``(B, h, w)`` bool masks)."""
        self._add(pointing_game_accuracy(saliency, target, self.image_size, reduction="none"))


class PointingGameEnergy(Metric):
    """Pointing game energy: mean PGE, or its median over all samples (mPGE).

    Args:
        image_size: ``(H, W)`` the boxes refer to (default: the maps' own size).
        reduction: ``"median"`` (mPGE, default; keeps one value per sample) or ``"mean"``.

    Example:
        >>> metric = PointingGameEnergy()
        >>> sal = torch.tensor([[[3.0, -1.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]])
        >>> metric.update(sal, torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]]))
        >>> metric.compute()  # energies 0.75 and 0.0 -> lower median
        tensor(0.)
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    def __init__(
        self,
        image_size: tuple[int, int] | None = None,
        reduction: Literal["median", "mean"] = "median",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.image_size = None if image_size is None else check_int_pair("image_size", image_size)
        self.reduction = check_choice("reduction", reduction, ("median", "mean"))
        self.add_state("energies", default=[], dist_reduce_fx="cat")

    def update(self, saliency: Tensor, target: Tensor) -> None:
        """Add ``(B, h, w)`` maps and ``(B, 4)`` boxes (or ``(B, h, w)`` bool masks)."""
        self.energies.append(
            pointing_game_energy(saliency, target, self.image_size, reduction="none").float()
        )

    def compute(self) -> Tensor:
        values = self.energies  # a list before, a tensor after a DDP sync
        values = dim_zero_cat(values) if isinstance(values, list) and values else values
        if isinstance(values, list) or values.numel() == 0:
            raise ValueError("Expected at least one update before compute, but got none.")
        return values.median() if self.reduction == "median" else values.mean()


class _CurveAUC(_MeanOfValues):
    is_differentiable = False

    def update(self, curves: Tensor) -> None:
        """Add ``(B, J + 1)`` score curves sampled at fractions ``0, 1/J, ..., 1``."""
        self._add(insertion_deletion_auc(curves))


class ConditionalInsertionAUC(_CurveAUC):
    """Mean area under conditional insertion curves (CII for images, CTI for captions).

    The features of one input are inserted, most attributed first, while the other input stays
    unchanged; higher is better.

    Example:
        >>> metric = ConditionalInsertionAUC()
        >>> metric.update(torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]))
        >>> metric.compute()
        tensor(0.5000)
    """

    higher_is_better = True


class ConditionalDeletionAUC(_CurveAUC):
    """Mean area under conditional deletion curves (CID for images, CTD for captions).

    The features of one input are removed, most attributed first, while the other input stays
    unchanged; lower is better.

    Example:
        >>> metric = ConditionalDeletionAUC()
        >>> metric.update(torch.tensor([[1.0, 0.0, 0.0]]))
        >>> metric.compute()
        tensor(0.2500)
    """

    higher_is_better = False


class ConfidenceDrop(_MeanOfValues):
    """Confidence drop (M2IB eq. 17): mean ``max(0, o - s)``; lower is better.

    Example:
        >>> metric = ConfidenceDrop()
        >>> metric.update(torch.tensor([0.3, 0.2]), torch.tensor([0.1, 0.4]))
        >>> metric.compute()
        tensor(0.1000)
    """

    higher_is_better = False
    is_differentiable = False

    def update(self, original: Tensor, distilled: Tensor) -> None:
        """Add ``(B,)`` original and distilled scores."""
        self._add(confidence_drop(original, distilled, reduction="none"))


class ConfidenceIncrease(_MeanOfValues):
    """Confidence increase (M2IB eq. 18): share of pairs with ``o < s``; higher is better.

    Example:
        >>> metric = ConfidenceIncrease()
        >>> metric.update(torch.tensor([0.3, 0.2]), torch.tensor([0.1, 0.4]))
        >>> metric.compute()
        tensor(0.5000)
    """

    higher_is_better = True
    is_differentiable = False

    def update(self, original: Tensor, distilled: Tensor) -> None:
        """Add ``(B,)`` original and distilled scores."""
        self._add(confidence_increase(original, distilled, reduction="none"))
