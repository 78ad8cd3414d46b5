"""``torchmetrics`` accumulator of Spearman's rank correlation (FIxLIP's p-faithfulness), the
mean of :func:`lico_lightning.functional.spearman_correlation` (``functional/rank.py``)."""

from __future__ import annotations

from typing import Any, Literal

import torch  # noqa: F401 - the doctest examples use it
from torch import Tensor

from lico_lightning._validation import check_choice
from lico_lightning.functional import spearman_correlation
from lico_lightning.metrics._mean import _MeanOfValues

__all__ = ["SpearmanCorrelation"]


class SpearmanCorrelation(_MeanOfValues):
    """Mean Spearman correlation per row; FIxLIP's p-faithfulness correlation (Definition 8)
    with game values and the explanation's approximations on the same coalitions.

    The mean over rows of :func:`~lico_lightning.functional.spearman_correlation`. Unlike
    ``torchmetrics.SpearmanCorrCoef`` (one correlation over all accumulated samples), every
    row is one explanation with its own correlation.

    Args:
        constant: a constant row: ``"raise"`` (default) or score it ``"zero"``.

    Example:
        >>> metric = SpearmanCorrelation()
        >>> metric.update(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[1.0, 5.0, 7.0, 6.0]]))
        >>> metric.compute()
        tensor(0.8000)
    """

    higher_is_better = True
    is_differentiable = False

    def __init__(self, constant: Literal["raise", "zero"] = "raise", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.constant = check_choice("constant", constant, ("raise", "zero"))

    def update(self, a: Tensor, b: Tensor) -> None:
        """Add ``(B, m)`` rows (FIxLIP: game values and approximations on the same coalitions)."""
        self._add(spearman_correlation(a, b, constant=self.constant))
