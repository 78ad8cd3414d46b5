r"""Ground-truth metrics: the DDP-correct accumulators of
:mod:`lico_lightning.functional.ground_truth`.

Evidence share and shortcut share need no class of their own: they are
:class:`~lico_lightning.metrics.EnergyPointingGame` updated with the target's and the cue's
region (``ground_truth["target_mask"]`` / ``["cue_mask"]`` of a
:class:`~lico_lightning.data.ShortcutDataModule` item) — one formula, one name. Likewise
*target reliance* and *cue reliance* are two instances of :class:`InterventionEffect`, fed the
logits of the scenes without the target and without the cue. What each metric needs:

============================  ==========================================================
metric                        update inputs (keys of the item's ``ground_truth``)
============================  ==========================================================
evidence share                ``EnergyPointingGame``: map, ``target_mask`` (or box)
shortcut share                ``EnergyPointingGame``: map, ``cue_mask`` (or box)
``RelevanceRankAccuracy``     map, ``target_mask`` (or ``target_box``)
``InterventionCorrectness``   map, ``object_masks`` (or ``object_boxes``), effects ``(B, O)``
                              = ``intervention_effect`` on ``dataset.counterfactuals``
target / cue reliance         ``InterventionEffect``: logits, logits without the target / cue,
                              the class read
``GroupAccuracy``             predictions, labels, ``group``
============================  ==========================================================

Registered in :data:`~lico_lightning.metrics.SALIENCY_METRICS` (so ``evaluate_saliency`` and
the ``SaliencyMonitor`` log them on batches that carry a ground-truth dict), with the inputs
they declare (``needs``, among :data:`~lico_lightning.metrics.SALIENCY_INPUTS`):

============================  ==========================================================
registered name               needs
============================  ==========================================================
``evidence_share``            ``saliency``, ``target_mask`` (``EnergyPointingGame``)
``shortcut_share``            ``saliency``, ``cue_mask`` (``EnergyPointingGame``)
``rank_accuracy``             ``saliency``, ``target_mask`` (``RelevanceRankAccuracy``)
``intervention_correctness``  ``saliency``, ``object_masks``, ``object_effects``
============================  ==========================================================

The model-level measures (target / cue reliance, group accuracy) need no explainer: the
evaluation's ``model_metrics`` (see :class:`~lico_lightning.evaluation.SaliencyEvaluation`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from lico_lightning._validation import check_choice, check_int, check_int_pair
from lico_lightning.functional.ground_truth import (
    group_counts,
    intervention_correctness,
    intervention_effect,
    reduce_group_accuracy,
    relevance_rank_accuracy,
)
from lico_lightning.metrics._mean import _MeanOfValues
from lico_lightning.metrics.base import SALIENCY_METRICS, SaliencyMetric, SaliencyMetricOptions
from lico_lightning.metrics.pointing import EnergyPointingGame

__all__ = [
    "GroupAccuracy",
    "InterventionCorrectness",
    "InterventionEffect",
    "RelevanceRankAccuracy",
]


@SALIENCY_METRICS.register("evidence_share")
class _EvidenceShare(EnergyPointingGame):
    """*Evidence share* (CLEVR-XAI's relevance mass accuracy on the target): the energy pointing
    game against ``target_mask`` — the same formula as ``energy_pointing_game`` and
    ``shortcut_share``, registered as its own protocol (its own input, its own logged name)."""

    needs = ("saliency", "target_mask")
    outputs = ("evidence_share",)


@SALIENCY_METRICS.register("shortcut_share")
class _ShortcutShare(EnergyPointingGame):
    """*Shortcut share*: the energy pointing game against ``cue_mask`` (the share of the
    positive attribution on the spurious cue) — the formula of ``energy_pointing_game`` and
    ``evidence_share``, another protocol."""

    needs = ("saliency", "cue_mask")
    outputs = ("shortcut_share",)


@SALIENCY_METRICS.register("rank_accuracy")
class RelevanceRankAccuracy(SaliencyMetric, _MeanOfValues):
    r"""Mean relevance rank accuracy (CLEVR-XAI) over the maps with a non-empty region.

    .. math::
        \text{RRA} = \frac{1}{B'} \sum_b \frac{|\text{top}_{K_b}(s_b) \cap M_b|}{K_b}

    See :func:`~lico_lightning.functional.relevance_rank_accuracy` (ties shared out evenly).

    Args:
        image_size: ``(H, W)`` the boxes refer to (default: the maps' own size).
        zero_division: value returned (with a warning) when no map had a region; ``None``:
            raise instead.
        kwargs: ``torchmetrics.Metric`` options.

    Example:
        >>> sal = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
        >>> metric = RelevanceRankAccuracy()
        >>> metric.update(sal, torch.tensor([[[True, True], [False, False]]]))
        >>> metric.update(sal, torch.tensor([[[False, False], [True, True]]]))
        >>> metric.compute()
        tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = True
    needs = ("saliency", "target_mask")
    outputs = ("rank_accuracy",)

    def __init__(
        self,
        image_size: tuple[int, int] | None = None,
        zero_division: float | None = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(zero_division=zero_division, **kwargs)
        self.image_size = None if image_size is None else check_int_pair("image_size", image_size)
        self.last_values: dict[str, Tensor] = {}

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: float = 0.0
    ) -> SaliencyMetric:
        return cls(zero_division=zero_division)

    def update(self, saliency: Tensor, region: Tensor) -> None:
        """Accumulate ``(B, h, w)`` maps with ``(B, h, w)`` bool masks or ``(B, 4)`` boxes."""
        values = relevance_rank_accuracy(
            saliency, region, image_size=self.image_size, reduction="none"
        )
        # per-map values of the latest update (NaN: empty region), not a state
        self.last_values = {self.outputs[0]: values.detach()}
        self._add(values[~values.isnan()])


@SALIENCY_METRICS.register("intervention_correctness")
class InterventionCorrectness(SaliencyMetric, _MeanOfValues):
    r"""Mean single-deletion intervention correctness (FunnyBirds) over the images whose
    correlation is defined.

    .. math::
        \bar\rho = \frac{1}{B'} \sum_b \operatorname{Spearman}\big((e_{b,o})_o,
        (\tfrac{1}{|R_{b,o}|}\textstyle\sum_{p \in R_{b,o}} s_{b,p})_o\big)

    See :func:`~lico_lightning.functional.intervention_correctness` (why the mean attribution
    per cell, not FunnyBirds' sum, by default).

    Args:
        mass: ``"mean"`` attribution per cell of each object, or ``"sum"`` (FunnyBirds).
        image_size: ``(H, W)`` the boxes refer to (default: the maps' own size).
        zero_division: value returned (with a warning) when no image had a defined
            correlation; ``None``: raise instead.
        kwargs: ``torchmetrics.Metric`` options.

    Example:
        >>> sal = torch.zeros(1, 4, 4); sal[0, 0, 0] = 3.0; sal[0, 3, 3] = 1.0
        >>> boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0]]])
        >>> metric = InterventionCorrectness()
        >>> metric.update(sal, boxes, torch.tensor([[5.0, 0.0]]))
        >>> metric.update(sal, boxes, torch.tensor([[0.0, 5.0]]))
        >>> metric.compute()
        tensor(0.)
    """

    is_differentiable = False
    higher_is_better = True
    needs = ("saliency", "object_masks", "object_effects")
    outputs = ("intervention_correctness",)

    def __init__(
        self,
        mass: Literal["mean", "sum"] = "mean",
        image_size: tuple[int, int] | None = None,
        zero_division: float | None = float("nan"),
        **kwargs: Any,
    ) -> None:
        super().__init__(zero_division=zero_division, **kwargs)
        self.mass = check_choice("mass", mass, ("mean", "sum"))
        self.image_size = None if image_size is None else check_int_pair("image_size", image_size)
        self.last_values: dict[str, Tensor] = {}

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: float = 0.0
    ) -> SaliencyMetric:
        return cls(zero_division=zero_division)

    def update(self, saliency: Tensor, regions: Tensor, effects: Tensor) -> None:
        """Accumulate ``(B, h, w)`` maps, ``(B, O, h, w)`` masks or ``(B, O, 4)`` boxes of the
        objects, and ``(B, O)`` true effects of removing each."""
        values = intervention_correctness(
            saliency, regions, effects, mass=self.mass, image_size=self.image_size, reduction="none"
        )
        self.last_values = {self.outputs[0]: values.detach()}
        self._add(values[~values.isnan()])


class InterventionEffect(_MeanOfValues):
    r"""Mean drop of a class logit when the scenes are re-rendered without one object:
    *target reliance* fed the scenes without the target, *cue reliance* without the cue.

    .. math::
        \bar\Delta = \frac{1}{B} \sum_b z_{b,y_b}(x_b) - z_{b,y_b}(x_b^{\setminus o})

    See :func:`~lico_lightning.functional.intervention_effect`. A model that ignores the object
    scores about 0.

    Args:
        kwargs: ``torchmetrics.Metric`` options.

    Example:
        >>> metric = InterventionEffect()
        >>> metric.update(torch.tensor([[3.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
        >>> metric.update(torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([1]))
        >>> metric.compute()
        tensor(1.)
    """

    is_differentiable = False
    higher_is_better = None  # high cue reliance is bad, high target reliance good

    def update(self, logits: Tensor, counterfactual_logits: Tensor, target: Tensor) -> None:
        """Accumulate ``(B, C)`` logits, ``(B, C)`` logits of the scenes without the object and
        the ``(B,)`` classes whose logit is read."""
        self._add(intervention_effect(logits, counterfactual_logits, target, reduction="none"))


class GroupAccuracy(Metric):
    r"""Accuracy per group (e.g. ``2 * label + cue_agrees``), their unweighted mean and the
    worst group's accuracy (Sagawa et al. 2020).

    .. math::
        \text{acc}_g = \frac{\text{correct}_g}{n_g}, \qquad
        \text{worst} = \min_{g: n_g > 0} \text{acc}_g

    Two ``(G,)`` count states summed across processes, so the value under DDP equals the
    value over every sample of every rank. See :func:`~lico_lightning.functional.group_accuracy`.

    Args:
        num_groups: number of groups ``G``.
        zero_division: value of ``"worst"`` / ``"mean"`` returned when no sample was seen;
            ``None``: raise instead.
        kwargs: ``torchmetrics.Metric`` options.

    Returns (``compute``):
        ``{"worst": (), "mean": (), "per_group": (G,)}`` with NaN for an empty group.

    Example:
        >>> metric = GroupAccuracy(num_groups=2)
        >>> metric.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), torch.tensor([0, 1, 0]))
        >>> out = metric.compute()
        >>> out["worst"], out["mean"], out["per_group"]
        (tensor(0.5000), tensor(0.7500), tensor([0.5000, 1.0000]))
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    count: Tensor

    def __init__(
        self, num_groups: int, zero_division: float | None = float("nan"), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.num_groups = check_int("num_groups", num_groups, 1)
        self.zero_division = zero_division
        zeros = torch.zeros(num_groups, dtype=torch.long)
        self.add_state("correct", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("count", default=zeros.clone(), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, group: Tensor) -> None:
        """Accumulate ``(B,)`` predicted classes (or ``(B, C)`` scores), ``(B,)`` labels and
        ``(B,)`` groups."""
        correct, count = group_counts(preds, target, group, self.num_groups)
        self.correct += correct.to(self.correct.device)
        self.count += count.to(self.count.device)

    def compute(self) -> dict[str, Tensor]:
        per_group = reduce_group_accuracy(self.correct, self.count, "none")
        if int(self.count.sum()) == 0:
            if self.zero_division is None:
                raise ValueError(
                    "Expected at least one update before compute() of GroupAccuracy, but got none."
                )
            empty = torch.tensor(self.zero_division, dtype=torch.float32, device=per_group.device)
            return {"worst": empty, "mean": empty.clone(), "per_group": per_group}
        return {
            "worst": reduce_group_accuracy(self.correct, self.count, "worst"),
            "mean": reduce_group_accuracy(self.correct, self.count, "mean"),
            "per_group": per_group,
        }
