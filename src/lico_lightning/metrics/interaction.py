"""``torchmetrics`` classes for interaction explanations: AID, PGR and Spearman's correlation
(FIxLIP's p-faithfulness).

Each class averages the per-explanation values of its functional counterpart in
:mod:`lico_lightning.functional.interaction_metrics` (states ``total`` and ``count``, summed
across processes, so DDP gives the mean over every explanation seen by every rank).
"""

from __future__ import annotations

from typing import Any, Literal

import torch  # noqa: F401 - the doctest examples use it
from torch import Tensor

from lico_lightning._validation import check_bool, check_choice
from lico_lightning.functional import (
    area_between_insertion_deletion,
    pointing_game_recognition,
    spearman_correlation,
)
from lico_lightning.metrics._mean import _MeanOfValues

__all__ = [
    "AreaBetweenInsertionDeletion",
    "PointingGameRecognition",
    "SpearmanCorrelation",
]


class _MeanOverExplanations(_MeanOfValues):
    """Mean of per-explanation values (sum and count are DDP-summed)."""

    is_differentiable = False


class AreaBetweenInsertionDeletion(_MeanOverExplanations):
    """Mean area between insertion and deletion curves (AID, FIxLIP Definition 9).

    See :func:`~lico_lightning.functional.area_between_insertion_deletion`. Explanations may
    have different numbers of players across updates.

    Args:
        normalize: rescale curves to ``ν(∅) = 0``, ``ν(N) = 1`` and divide by ``n``.

    Example:
        >>> metric = AreaBetweenInsertionDeletion()
        >>> metric.update(torch.tensor([0.0, 3.0, 4.0]), torch.tensor([0.0, 1.0, 4.0]))
        >>> metric.update(torch.tensor([[0.0, 1.0, 1.0, 2.0]]), torch.tensor([[0.0, 0.0, 1.0, 2.0]]))
        >>> metric.compute()
        tensor(0.2083)
    """

    higher_is_better = True

    def __init__(self, normalize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.normalize = check_bool("normalize", normalize)

    def update(self, max_values: Tensor, min_values: Tensor) -> None:
        """Add curves ``(n+1,)`` or ``(B, n+1)`` (game values of :math:`M_{e,\\max,k}`, :math:`M_{e,\\min,k}`)."""
        self._add(area_between_insertion_deletion(max_values, min_values, normalize=self.normalize))


class PointingGameRecognition(_MeanOverExplanations):
    """Mean pointing game recognition (PGR, FIxLIP Definition 10).

    See :func:`~lico_lightning.functional.pointing_game_recognition`.

    Example:
        >>> metric = PointingGameRecognition()
        >>> e = torch.tensor([[[2.0, -1.0], [-1.0, 1.0]]])
        >>> obj = torch.tensor([[[True, False], [False, True]]])
        >>> metric.update(e, obj)
        >>> metric.update(-e, obj)
        >>> metric.compute()
        tensor(0.5000)
    """

    higher_is_better = True

    def update(
        self, interactions: Tensor, object_masks: Tensor, token_mask: Tensor | None = None
    ) -> None:
        """Add ``(B, T, P)`` interactions with their ``(B, T, P)`` object masks (and ``(B, T)`` tokens)."""
        self._add(pointing_game_recognition(interactions, object_masks, token_mask))


class SpearmanCorrelation(_MeanOverExplanations):
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

    def __init__(self, constant: Literal["raise", "zero"] = "raise", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.constant = check_choice("constant", constant, ("raise", "zero"))

    def update(self, a: Tensor, b: Tensor) -> None:
        """Add ``(B, m)`` rows (FIxLIP: game values and approximations on the same coalitions)."""
        self._add(spearman_correlation(a, b, constant=self.constant))
