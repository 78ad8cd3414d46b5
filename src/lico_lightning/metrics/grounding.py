"""Grounding / faithfulness metrics for dual-encoder explanations (``torchmetrics.Metric``).

Accumulators over the formulas in :mod:`lico_lightning.functional`; every state is
reduced across processes (sums with ``dist_reduce_fx="sum"``, per-sample values for medians
with ``"cat"``), so values under DDP equal those of one process over all samples.

* PGA and PGE / mPGE are :class:`~lico_lightning.metrics.PointingGame` (``tolerance=0``) and
  :class:`~lico_lightning.metrics.EnergyPointingGame` (``reduction="median"`` for mPGE), shared
  with classifier saliency.
* :class:`ConditionalInsertionAUC` / :class:`ConditionalDeletionAUC` — mean area under
  conditional insertion / deletion curves: CII and CID when the image is perturbed, CTI and CTD
  when the caption is (curves from
  :func:`lico_lightning.explain.conditional_perturbation_curves`).
* :class:`PairConfidenceDrop` / :class:`PairConfidenceIncrease` — M2IB eqs. 17–18.
"""

from __future__ import annotations

import torch  # noqa: F401 - the doctest examples use it
from torch import Tensor

from lico_lightning.functional import curve_auc, pair_confidence_drop, pair_confidence_increase
from lico_lightning.metrics._mean import _MeanOfValues

__all__ = [
    "ConditionalDeletionAUC",
    "ConditionalInsertionAUC",
    "PairConfidenceDrop",
    "PairConfidenceIncrease",
]


class _CurveAUC(_MeanOfValues):
    """Mean of :func:`~lico_lightning.functional.curve_auc` over evenly spaced curves; the two
    subclasses differ only in which direction is better."""

    is_differentiable = False

    def update(self, curves: Tensor) -> None:
        """Add ``(B, J + 1)`` score curves sampled at fractions ``0, 1/J, ..., 1``."""
        self._add(curve_auc(curves))


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


class PairConfidenceDrop(_MeanOfValues):
    """Confidence drop of image–text pairs (M2IB eq. 17): mean ``max(0, o - s)``; lower is
    better. The mean of :func:`~lico_lightning.functional.pair_confidence_drop`.

    Example:
        >>> metric = PairConfidenceDrop()
        >>> metric.update(torch.tensor([0.3, 0.2]), torch.tensor([0.1, 0.4]))
        >>> metric.compute()
        tensor(0.1000)
    """

    higher_is_better = False
    is_differentiable = False

    def update(self, original: Tensor, distilled: Tensor) -> None:
        """Add ``(B,)`` original and distilled scores."""
        self._add(pair_confidence_drop(original, distilled, reduction="none"))


class PairConfidenceIncrease(_MeanOfValues):
    """Confidence increase of image–text pairs (M2IB eq. 18): share of pairs with ``o < s``;
    higher is better. The mean of :func:`~lico_lightning.functional.pair_confidence_increase`.

    Example:
        >>> metric = PairConfidenceIncrease()
        >>> metric.update(torch.tensor([0.3, 0.2]), torch.tensor([0.1, 0.4]))
        >>> metric.compute()
        tensor(0.5000)
    """

    higher_is_better = True
    is_differentiable = False

    def update(self, original: Tensor, distilled: Tensor) -> None:
        """Add ``(B,)`` original and distilled scores."""
        self._add(pair_confidence_increase(original, distilled, reduction="none"))
