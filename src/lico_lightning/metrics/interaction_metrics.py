"""``torchmetrics`` classes for interaction explanations: AID and PGR (FIxLIP).

Each class averages the per-explanation values of its functional counterpart in
:mod:`lico_lightning.functional.interaction_metrics` (states ``total`` and ``count``, summed
across processes, so DDP gives the mean over every explanation seen by every rank).
"""

from __future__ import annotations

from typing import Any

import torch  # noqa: F401 - the doctest examples use it
from torch import Tensor

from lico_lightning._validation import check_bool
from lico_lightning.functional import (
    area_between_insertion_deletion,
    pointing_game_recognition,
)
from lico_lightning.metrics._mean import _MeanOfValues

__all__ = [
    "AreaBetweenInsertionDeletion",
    "PointingGameRecognition",
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
