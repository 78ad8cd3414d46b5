r"""``torchmetrics`` accumulators of the pointing games (Zhang et al., 2018; Score-CAM's energy
variant), which score classifier saliency and dual-encoder grounding maps alike: PGA / PGE /
mPGE of the grounding protocol are these classes with ``tolerance=0`` / ``reduction="median"``.
Each is the mean of one :mod:`lico_lightning.functional.pointing` function
(``PointingGame`` ↔ ``pointing_game``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch  # noqa: F401 - the doctest examples use it
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lico_lightning._validation import check_choice, check_int_pair, check_real
from lico_lightning.functional import DEFAULT_TOLERANCE, energy_pointing_game, pointing_game
from lico_lightning.metrics._mean import _mean_of_sum, _MeanOfValues
from lico_lightning.metrics.base import (
    GROUNDING_METRICS,
    SALIENCY_METRICS,
    SaliencyMetric,
    SaliencyMetricOptions,
)

__all__ = ["EnergyPointingGame", "PointingGame"]


@SALIENCY_METRICS.register("pointing_game")
class PointingGame(SaliencyMetric, _MeanOfValues):
    r"""Pointing-game accuracy Hits / (Hits + Misses) (Zhang et al., 2018), for classifier
    saliency and dual-encoder grounding maps (PGA: ``tolerance=0``).

    .. math::
        \text{Acc} = \frac{\#\text{hits}}{\#\text{hits} + \#\text{misses}}

    The mean of :func:`~lico_lightning.functional.pointing_game` over the maps that have a
    region (images with an empty box list are skipped).

    Args:
        tolerance: pixels (Zhang et al.: 15; 0: the maximum must lie in a box).
        image_size: ``(H, W)`` the boxes refer to (default: the maps' own size).
        zero_division: value returned (with a warning) when no map had a region; ``None``:
            raise instead.
        kwargs: ``torchmetrics.Metric`` options.

    Example:
        >>> sal = torch.zeros(2, 40, 40); sal[0, 5, 5] = 1; sal[1, 30, 30] = 1
        >>> metric = PointingGame()
        >>> metric.update(sal, [torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]])])
        >>> metric.compute()
        tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = True
    needs = ("saliency", "boxes")
    outputs = ("pointing_game",)

    def __init__(
        self,
        tolerance: float = DEFAULT_TOLERANCE,
        image_size: tuple[int, int] | None = None,
        zero_division: float | None = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(zero_division=zero_division, **kwargs)
        self.last_values: dict[str, Tensor] = {}
        self.tolerance = check_real("tolerance", tolerance, low=0.0, strict=False)
        self.image_size = None if image_size is None else check_int_pair("image_size", image_size)

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: float = 0.0
    ) -> SaliencyMetric:
        return cls(tolerance=options.tolerance, zero_division=zero_division)

    def update(self, saliency: Tensor, boxes: Sequence[Tensor] | Tensor) -> None:
        """Accumulate ``(B, h, w)`` maps with their regions (a list of ``B`` ``(K_i, 4)``
        boxes, ``(B, 4)`` boxes or ``(B, h, w)`` bool masks)."""
        hits = pointing_game(
            saliency, boxes, tolerance=self.tolerance, image_size=self.image_size, reduction="none"
        )
        self._add(hits[~hits.isnan()])
        # per-map hits of the latest update (NaN: no region), not a state
        self.last_values = {self.outputs[0]: hits.detach()}


@SALIENCY_METRICS.register("energy_pointing_game")
class EnergyPointingGame(SaliencyMetric, _MeanOfValues):
    r"""Energy pointing game: mean (or median, mPGE) share of positive saliency inside the
    regions, for classifier saliency (Score-CAM) and dual-encoder grounding maps (PGE).

    .. math::
        \text{E} = \frac{1}{B'}\sum_b \frac{\sum_{p \in \text{regions}_b} s^+_p}{\sum_p s^+_p}

    over the ``B'`` maps that have a region; see
    :func:`~lico_lightning.functional.energy_pointing_game`. The median keeps one value per
    map (a ``"cat"`` state); the mean keeps a sum and a count.

    Args:
        image_size: ``(H, W)`` the boxes refer to (default: the maps' own size).
        reduction: ``"mean"`` (default) or ``"median"`` (mPGE; the lower median).
        zero_division: value returned (with a warning) when no map had a region; ``None``:
            raise instead.
        kwargs: ``torchmetrics.Metric`` options.

    Example:
        >>> sal = torch.zeros(1, 4, 4); sal[0, 0, 0] = 3.0; sal[0, 3, 3] = 1.0
        >>> metric = EnergyPointingGame()
        >>> metric.update(sal, [torch.tensor([[0.0, 0.0, 2.0, 2.0]])])
        >>> metric.compute()
        tensor(0.7500)
    """

    is_differentiable = False
    higher_is_better = True
    needs = ("saliency", "boxes")
    outputs = ("energy_pointing_game",)

    energies: list[Tensor]

    def __init__(
        self,
        image_size: tuple[int, int] | None = None,
        reduction: Literal["mean", "median"] = "mean",
        zero_division: float | None = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(zero_division=zero_division, **kwargs)
        self.last_values: dict[str, Tensor] = {}
        self.image_size = None if image_size is None else check_int_pair("image_size", image_size)
        self.reduction = check_choice("reduction", reduction, ("mean", "median"))
        if self.reduction == "median":
            self.add_state("energies", default=[], dist_reduce_fx="cat")

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: float = 0.0
    ) -> SaliencyMetric:
        return cls(zero_division=zero_division)

    def update(self, saliency: Tensor, boxes: Sequence[Tensor] | Tensor) -> None:
        """Accumulate ``(B, h, w)`` maps with their regions (a list of ``B`` ``(K_i, 4)``
        boxes, ``(B, 4)`` boxes or ``(B, h, w)`` bool masks)."""
        energy = energy_pointing_game(saliency, boxes, image_size=self.image_size, reduction="none")
        # per-map energies of the latest update (NaN: no region), not a state
        self.last_values = {self.outputs[0]: energy.detach()}
        energy = energy[~energy.isnan()]
        self._add(energy)
        if self.reduction == "median":
            self.energies.append(energy.float())

    def standard_errors(self) -> dict[str, Tensor]:
        """The mean's standard error (see ``_MeanOfValues``); none for the median."""
        return super().standard_errors() if self.reduction == "mean" else {}

    def compute(self) -> Tensor:
        if self.reduction == "mean":
            return super().compute()
        state: list[Tensor] | Tensor = self.energies  # a list before, a tensor after a DDP sync
        values = dim_zero_cat(state) if not isinstance(state, list) or state else None
        if values is None or values.numel() == 0:
            return _mean_of_sum(self.total, self.count, type(self).__name__, self.zero_division)
        return values.median()


def _pga(image_size: tuple[int, int] | None) -> Metric:
    return PointingGame(tolerance=0.0, image_size=image_size, zero_division=float("nan"))


def _pge(image_size: tuple[int, int] | None) -> Metric:
    return EnergyPointingGame(image_size=image_size, zero_division=float("nan"))


def _mpge(image_size: tuple[int, int] | None) -> Metric:
    return EnergyPointingGame(image_size=image_size, reduction="median", zero_division=float("nan"))


def _against_distractor(
    factory: Callable[[tuple[int, int] | None], Metric],
) -> Callable[..., Metric]:
    """The same metric scored on the probes that have a distractor box, against that box."""

    def build(image_size: tuple[int, int] | None) -> Metric:
        metric = factory(image_size)
        metric.needs = ("distractor_saliency", "distractor_boxes")
        return metric

    return build


for _name, _factory in (("pga", _pga), ("pge", _pge), ("mpge", _mpge)):
    GROUNDING_METRICS.register(_name, _factory)
    GROUNDING_METRICS.register(f"{_name}_distractor", _against_distractor(_factory))
