r"""``torchmetrics`` accumulators of confidence changes on the explanation: average drop and
increase in confidence (Grad-CAM++, LICO Appendix B) for classifiers, and the pair confidence
drop / increase (M2IB eqs. 17–18) for dual encoders. Each is the mean of one
:mod:`lico_lightning.functional.confidence` function (``AverageDrop`` ↔ ``average_drop``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch  # noqa: F401 - the doctest examples use it
from torch import Tensor

from lico_lightning.functional import (
    average_drop,
    increase_in_confidence,
    pair_confidence_drop,
    pair_confidence_increase,
    target_probability,
)
from lico_lightning.metrics._mean import ZeroDivision, _MeanOfValues
from lico_lightning.metrics.base import (
    SALIENCY_METRICS,
    Model,
    SaliencyMetric,
    SaliencyMetricOptions,
    _model_context,
)

__all__ = [
    "AverageDrop",
    "ClassConfidence",
    "IncreaseInConfidence",
    "PairConfidenceDrop",
    "PairConfidenceIncrease",
]


class _ConfidenceMetric(SaliencyMetric, _MeanOfValues):
    is_differentiable = False
    needs = ("model", "images", "saliency", "target", "clean_probability")
    _function: ClassVar[Callable[..., Tensor]]

    def __init__(self, zero_division: ZeroDivision = "warn", **kwargs: Any) -> None:
        super().__init__(zero_division=zero_division, **kwargs)

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: ZeroDivision = "warn"
    ) -> SaliencyMetric:
        return cls(zero_division=zero_division)

    def update(
        self,
        model: Model,
        images: Tensor,
        saliency: Tensor,
        target: Tensor,
        clean_probability: Tensor | None = None,
    ) -> None:
        """Accumulate a batch (``images (B, C, H, W)``, ``saliency (B, H, W)``, ``target (B,)``;
        ``clean_probability (B,)``: the target's probability on ``images`` when the caller has
        it, saving one forward pass)."""
        function = type(self)._function
        with _model_context(model):
            values = function(model, images, saliency, target, "none", clean_probability)
        self._add(values)


@SALIENCY_METRICS.register("average_drop")
class AverageDrop(_ConfidenceMetric):
    r"""Average drop in confidence on the explanation map (Grad-CAM++; lower is better),
    as a fraction (×100 for the papers' %).

    .. math::
        \text{AD} = \frac1B \sum_b \frac{\max(0, Y_b - O_b)}{Y_b}

    The mean over images of :func:`~lico_lightning.functional.average_drop`.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> metric = AverageDrop()
        >>> metric.update(model, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 2]))
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    higher_is_better = False
    outputs = ("average_drop",)
    _function = staticmethod(average_drop)


@SALIENCY_METRICS.register("increase_in_confidence")
class IncreaseInConfidence(_ConfidenceMetric):
    r"""Share of images whose target confidence rises on the explanation map (Grad-CAM++;
    higher is better).

    .. math::
        \text{IC} = \frac1B \sum_b \mathbb{1}[Y_b < O_b]

    The mean over images of :func:`~lico_lightning.functional.increase_in_confidence`.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> metric = IncreaseInConfidence()
        >>> metric.update(model, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 2]))
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    higher_is_better = True
    outputs = ("increase_in_confidence",)
    _function = staticmethod(increase_in_confidence)


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


class ClassConfidence(_MeanOfValues):
    r"""The model's clean confidence in the explained class: mean ``softmax(logits)[target]``.

    .. math::
        \bar p = \frac1N \sum_i \operatorname{softmax}(f(x_i))_{t_i}

    The mean of :func:`~lico_lightning.functional.target_probability`. Perturbation AUCs
    (insertion, deletion, ROAD) are areas under this probability along a path, so they move with
    it: read them beside it (``model_metrics=["confidence"]`` of the saliency evaluation and
    monitor; the metric-validity study in the README).

    Example:
        >>> metric = ClassConfidence()
        >>> metric.update(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1]))
        >>> metric.compute()
        tensor(0.3096)
    """

    higher_is_better: bool | None = None
    is_differentiable = False

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add ``(B, K)`` logits and the ``(B,)`` explained classes."""
        self._add(target_probability(logits, target))
