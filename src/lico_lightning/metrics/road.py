r"""``torchmetrics`` accumulators for the debiased removal metrics of
:mod:`lico_lightning.functional.road`: ROAD's MoRF / LeRF areas (Rong et al., ICML 2022) and
the symmetric relevance gain (Blücher et al., TMLR 2024).

Each class is the mean over images of one functional formula (``ROADAUC`` ↔ ``road_auc``,
``SymmetricRelevanceGain`` ↔ ``symmetric_relevance_gain`` on ROAD curves), with float64 sums
and counts reduced by ``"sum"`` across processes (the shared ``_MeanOfValues`` accumulator).
The classifier is passed to :meth:`update` (never stored); it runs in eval mode under
``no_grad`` and its train/eval and ``requires_grad`` flags are restored afterwards. The noise
of the imputation comes from the metric's own seeded ``torch.Generator``, never from the
global random state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from lico_lightning._validation import check_bool, check_choice, check_int, check_real
from lico_lightning.functional.road import (
    DEFAULT_ROAD_FRACTIONS,
    DEFAULT_ROAD_NOISE,
    road_auc,
    road_curve_fractions,
)
from lico_lightning.metrics._mean import _mean_of_sum, _MeanOfPairs, _MeanOfValues
from lico_lightning.metrics.base import (
    SALIENCY_METRICS,
    SaliencyMetric,
    SaliencyMetricOptions,
    _model_context,
)

__all__ = ["ROADAUC", "SymmetricRelevanceGain"]

Model = Callable[[Tensor], Tensor]


class _ROADMetric(SaliencyMetric, _MeanOfValues):
    """ROAD protocol knobs, the noise generator and the per-image AUCs of one ``update``."""

    full_state_update = False
    is_differentiable = False
    needs = ("model", "images", "saliency", "target")

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: float = 0.0
    ) -> SaliencyMetric:
        """ROAD's own protocol (fractions 0.1 … 0.9, noise 0.01, seed 0) with the evaluation's
        ``chunk_size``."""
        return cls(chunk_size=options.chunk_size, zero_division=zero_division)

    def __init__(
        self,
        fractions: Sequence[float] = DEFAULT_ROAD_FRACTIONS,
        noise: float = DEFAULT_ROAD_NOISE,
        score: Literal["probability", "correct"] = "probability",
        normalize: bool = False,
        seed: int = 0,
        chunk_size: int = 64,
        tol: float = 1e-5,
        max_iter: int = 100,
        zero_division: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(zero_division=zero_division, **kwargs)
        self.fractions = tuple(road_curve_fractions(fractions)[1:-1].tolist())
        check_real("noise", noise, low=0.0, strict=False)
        check_choice("score", score, ["probability", "correct"])
        self.normalize = check_bool("normalize", normalize)
        check_int("seed", seed, 0)
        check_int("chunk_size", chunk_size, 1)
        check_real("tol", tol, low=0.0, high=1.0)
        check_int("max_iter", max_iter, 1)
        self._protocol: dict[str, Any] = {
            "noise": noise,
            "score": score,
            "chunk_size": chunk_size,
            "tol": tol,
            "max_iter": max_iter,
        }
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.add_state("skipped", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        # per-image values of the latest ``update`` (not a state: never synced or checkpointed)
        self.last_values: dict[str, Tensor] = {}

    skipped: Tensor

    def _aucs(
        self, model: Model, images: Tensor, saliency: Tensor, target: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Per-image ``(morf, lerf)`` AUCs of the images whose curves are defined; counts the
        others (``normalize=True`` and a clean score not above the baseline's) in
        ``skipped``."""
        with _model_context(model):
            morf, lerf = road_auc(
                model,
                images,
                saliency,
                target,
                self.fractions,
                generator=self.generator,
                normalize=self.normalize,
                reduction="none",
                **self._protocol,
            )
        valid = ~morf.isnan()
        self.skipped += int((~valid).sum())
        return morf[valid].detach(), lerf[valid].detach()

    def reset(self) -> None:
        """Reset the accumulators and reseed the noise generator (same draws every epoch)."""
        super().reset()
        self.generator.manual_seed(self.seed)


class ROADAUC(_ROADMetric, _MeanOfPairs):
    r"""Areas under ROAD's most- and least-relevant-first curves and the symmetric relevance
    gain, means over images.

    .. math::
        \mathrm{MoRF} = \int_0^1 y^{\text{MoRF}}(f)\, df, \quad
        \mathrm{LeRF} = \int_0^1 y^{\text{LeRF}}(f)\, df, \quad
        \mathrm{SRG} = \mathrm{LeRF} - \mathrm{MoRF}

    The mean over images of :func:`~lico_lightning.functional.road_auc` (both curves from one
    pass of :func:`~lico_lightning.functional.road_curves`). ``compute()`` returns
    ``{"morf", "lerf", "srg"}``; ``higher_is_better`` refers to SRG (lower MoRF and higher LeRF
    are better).

    Args:
        fractions: increasing removal fractions in (0, 1) (ROAD: 0.1, ..., 0.9).
        noise: standard deviation of the imputation noise (ROAD: 0.01).
        score: ``"probability"`` (softmax of the target) or ``"correct"`` (ROAD's accuracy).
        normalize: integrate :func:`~lico_lightning.functional.confidence_normalized_curve`
            instead; images whose clean score does not exceed the fully removed image's are
            skipped (counted in the ``skipped`` state).
        seed: seed of the metric's noise generator (reseeded by ``reset()``).
        chunk_size: imputed images per solve and forward pass.
        tol: relative residual of the imputation solve.
        max_iter: conjugate-gradient iterations at most.
        zero_division: value of every key when no image was accumulated.
        kwargs: ``torchmetrics.Metric`` options.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(25, 3))
        >>> metric = ROADAUC(fractions=(0.2, 0.5, 0.8))
        >>> metric.update(model, torch.randn(2, 1, 5, 5), torch.rand(2, 5, 5), torch.tensor([0, 2]))
        >>> sorted(metric.compute())
        ['lerf', 'morf', 'srg']
    """

    higher_is_better = True
    outputs = ("morf", "lerf", "srg")

    def update(self, model: Model, images: Tensor, saliency: Tensor, target: Tensor) -> None:
        """Accumulate a batch (``images (B, C, H, W)``, ``saliency (B, H, W)``, ``target
        (B,)``)."""
        morf, lerf = self._aucs(model, images, saliency, target)
        self._add_pair(morf, lerf)  # total: MoRF, second_total: LeRF, count: images
        self.last_values = {"morf": morf, "lerf": lerf, "srg": lerf - morf}

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """``{"morf", "lerf", "srg"}`` means over all accumulated images."""
        name = type(self).__name__
        morf = _mean_of_sum(self.total, self.count, name, self.zero_division)
        lerf = _mean_of_sum(self.second_total, self.count, name, self.zero_division)
        return {"morf": morf, "lerf": lerf, "srg": lerf - morf}


class SymmetricRelevanceGain(_ROADMetric):
    r"""Symmetric relevance gain on ROAD curves (Blücher et al., TMLR 2024; higher is better),
    the mean over images.

    .. math::
        \mathrm{SRG} = \int_0^1 y^{\text{LeRF}}(f)\, df - \int_0^1 y^{\text{MoRF}}(f)\, df

    :func:`~lico_lightning.functional.symmetric_relevance_gain` of the curves of
    :func:`~lico_lightning.functional.road_curves`; a map independent of the image scores 0 in
    expectation.

    Args: as :class:`ROADAUC`.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(25, 3))
        >>> metric = SymmetricRelevanceGain(fractions=(0.2, 0.5, 0.8))
        >>> metric.update(model, torch.randn(2, 1, 5, 5), torch.rand(2, 5, 5), torch.tensor([0, 2]))
        >>> bool(-1 <= metric.compute() <= 1)
        True
    """

    higher_is_better = True
    outputs = ("srg",)

    def update(self, model: Model, images: Tensor, saliency: Tensor, target: Tensor) -> None:
        """Accumulate a batch (``images (B, C, H, W)``, ``saliency (B, H, W)``, ``target
        (B,)``)."""
        morf, lerf = self._aucs(model, images, saliency, target)
        srg = lerf - morf  # symmetric_relevance_gain of the two curves (areas are linear)
        self._add(srg)
        self.last_values = {"srg": srg}


SALIENCY_METRICS.register("srg", SymmetricRelevanceGain)


@SALIENCY_METRICS.register("road_morf")
class _ROADCurves(ROADAUC):
    """:class:`ROADAUC` as the evaluations log it: ``road_morf``, ``road_lerf`` and ``srg``
    (one pass gives the three; asked for with ``srg``, the evaluation builds this once)."""

    outputs = ("road_morf", "road_lerf", "srg")

    def update(self, model: Model, images: Tensor, saliency: Tensor, target: Tensor) -> None:
        super().update(model, images, saliency, target)
        self.last_values = {
            "road_morf": self.last_values["morf"],
            "road_lerf": self.last_values["lerf"],
            "srg": self.last_values["srg"],
        }

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        out = super().compute()
        return {"road_morf": out["morf"], "road_lerf": out["lerf"], "srg": out["srg"]}


SALIENCY_METRICS.register("road_lerf", _ROADCurves)
