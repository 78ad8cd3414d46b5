"""``torchmetrics`` accumulators for saliency quality (DDP-correct sums over the functional math).

Every state is a sum with ``dist_reduce_fx="sum"`` (numerator and count; the shared
``_MeanOfValues`` accumulator), so the value over several processes equals the value over the
union of their samples. Metrics that need the
classifier take it in :meth:`update` (it is not stored, so the metric holds no model weights);
they run it in eval mode under ``no_grad`` and restore its train/eval flags afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from lico_lightning._registry import Registry
from lico_lightning._safety import preserve_model_state
from lico_lightning._validation import check_choice, check_positive
from lico_lightning.functional.saliency import (
    DEFAULT_BLUR_KERNEL_SIZE,
    DEFAULT_BLUR_SIGMA,
    DEFAULT_STEP_FRACTION,
    DEFAULT_TOLERANCE,
    _check_step_and_chunk,
    _perturbation_aucs,
    confidence_change,
    energy_pointing_game,
    pointing_game,
)
from lico_lightning.metrics._mean import _mean_of_sum, _MeanOfValues

__all__ = [
    "SALIENCY_METRICS",
    "AverageDrop",
    "DeletionAUC",
    "EnergyPointingGame",
    "IncreaseInConfidence",
    "InsertionAUC",
    "InsertionDeletionAUC",
    "PointingGame",
    "SaliencyMetric",
    "SaliencyMetricOptions",
    "create_saliency_metric",
    "list_saliency_metrics",
]

Model = Callable[[Tensor], Tensor]


@dataclass
class SaliencyMetricOptions:
    """Protocol knobs shared by every classifier-saliency metric.

    Attributes:
        step_fraction: insertion/deletion step (LICO: 3.6 % of the pixels).
        insertion_substrate: insertion's start image, ``"blur"`` (protocol) or ``"zero"``.
        deletion_substrate: what deleted pixels become, ``"blur"`` or ``"zero"``.
        blur_kernel_size: Gaussian kernel of the blurred image (RISE: 11).
        blur_sigma: its sigma (RISE: 5).
        chunk_size: perturbed images per forward pass.
        tolerance: pointing-game tolerance in pixels (Zhang et al.: 15).
    """

    step_fraction: float = DEFAULT_STEP_FRACTION
    insertion_substrate: Literal["blur", "zero"] = "blur"
    deletion_substrate: Literal["blur", "zero"] = "blur"
    blur_kernel_size: int = DEFAULT_BLUR_KERNEL_SIZE
    blur_sigma: float = DEFAULT_BLUR_SIGMA
    chunk_size: int = 64
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        _check_step_and_chunk(self.step_fraction, self.chunk_size)
        check_choice("insertion_substrate", self.insertion_substrate, ["blur", "zero"])
        check_choice("deletion_substrate", self.deletion_substrate, ["blur", "zero"])
        check_positive("tolerance", self.tolerance, strict=False)


class SaliencyMetric(Metric):
    """What every registered classifier-saliency metric declares (see :data:`SALIENCY_METRICS`).

    Attributes:
        needs_boxes: ``update`` takes ``boxes``; batches without boxes are skipped.
        outputs: the names ``compute()`` reports: one (a tensor) or several (a dict).
    """

    needs_boxes: ClassVar[bool] = False
    outputs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: float = 0.0
    ) -> SaliencyMetric:
        """Build the metric with the protocol knobs of ``options``."""
        raise NotImplementedError


#: Classifier-saliency metrics by name (``list_saliency_metrics()``); each entry is a
#: :class:`SaliencyMetric` class, built with :meth:`SaliencyMetric.from_options`.
SALIENCY_METRICS: Registry[type[SaliencyMetric]] = Registry("saliency metric")


def list_saliency_metrics() -> list[str]:
    """Metric names accepted by :func:`~lico_lightning.explain.evaluate_saliency`,
    :class:`~lico_lightning.explain.SaliencyEvaluation` and the ``SaliencyMonitor``.

    Example:
        >>> list_saliency_metrics()[:3]
        ['average_drop', 'deletion', 'energy_pointing_game']
    """
    return SALIENCY_METRICS.names()


def create_saliency_metric(
    name: str, options: SaliencyMetricOptions | None = None, zero_division: float = 0.0
) -> SaliencyMetric:
    """The registered metric ``name`` built with ``options`` (default protocol knobs).

    Example:
        >>> type(create_saliency_metric("pointing_game")).__name__
        'PointingGame'
    """
    return SALIENCY_METRICS.get(name).from_options(
        options or SaliencyMetricOptions(), zero_division
    )


def _model_context(model: Model) -> Any:
    return preserve_model_state(model) if isinstance(model, nn.Module) else nullcontext()


class _PerturbationAUC(SaliencyMetric, _MeanOfValues):
    """Configuration and the AUC computation shared by the insertion/deletion metrics."""

    full_state_update = False
    is_differentiable = False
    higher_is_better: bool | None = True

    _modes: tuple[str, ...] = ("insertion", "deletion")

    def __init__(
        self,
        step_fraction: float = DEFAULT_STEP_FRACTION,
        insertion_substrate: Literal["blur", "zero"] = "blur",
        deletion_substrate: Literal["blur", "zero"] = "blur",
        chunk_size: int = 128,
        blur_kernel_size: int = DEFAULT_BLUR_KERNEL_SIZE,
        blur_sigma: float = DEFAULT_BLUR_SIGMA,
        zero_division: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(zero_division=zero_division, **kwargs)
        _check_step_and_chunk(step_fraction, chunk_size)
        check_choice("insertion_substrate", insertion_substrate, ["blur", "zero"])
        check_choice("deletion_substrate", deletion_substrate, ["blur", "zero"])
        self.step_fraction = step_fraction
        self.substrates = {"insertion": insertion_substrate, "deletion": deletion_substrate}
        self.chunk_size = chunk_size
        self.blur_kernel_size = blur_kernel_size
        self.blur_sigma = blur_sigma

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: float = 0.0
    ) -> SaliencyMetric:
        return cls(
            step_fraction=options.step_fraction,
            insertion_substrate=options.insertion_substrate,
            deletion_substrate=options.deletion_substrate,
            chunk_size=options.chunk_size,
            blur_kernel_size=options.blur_kernel_size,
            blur_sigma=options.blur_sigma,
            zero_division=zero_division,
        )

    def _aucs(
        self, model: Model, images: Tensor, saliency: Tensor, target: Tensor
    ) -> dict[str, Tensor]:
        with _model_context(model):
            return _perturbation_aucs(
                model,
                images,
                saliency,
                target,
                {mode: self.substrates[mode] for mode in self._modes},  # type: ignore[misc]
                step_fraction=self.step_fraction,
                chunk_size=self.chunk_size,
                blur_kernel_size=self.blur_kernel_size,
                blur_sigma=self.blur_sigma,
            )

    def update(self, model: Model, images: Tensor, saliency: Tensor, target: Tensor) -> None:
        """Accumulate the AUCs of a batch (``images (B, C, H, W)``, ``saliency (B, H, W)``,
        ``target (B,)``)."""
        self._add(self._aucs(model, images, saliency, target)[self._modes[0]])


@SALIENCY_METRICS.register("overall")
class InsertionDeletionAUC(_PerturbationAUC):
    r"""Insertion and deletion AUC (RISE / LICO Table 1) and their difference, "overall".

    .. math::
        \text{Overall} = \text{Ins} - \text{Del}

    See :func:`~lico_lightning.functional.insertion_auc` for the protocol. Both curves come
    from one pass (shared end points evaluated once). ``compute()`` returns
    ``{"insertion", "deletion", "overall"}``; ``higher_is_better`` refers to overall.

    Args:
        step_fraction: share of pixels per step (LICO: 0.036).
        insertion_substrate: start image of insertion, ``"blur"`` (protocol) or ``"zero"``.
        deletion_substrate: what deleted pixels become, ``"blur"`` or ``"zero"``.
        chunk_size: perturbed images per forward pass.
        blur_kernel_size: Gaussian kernel (RISE: 11).
        blur_sigma: Gaussian sigma (RISE: 5).
        zero_division: value of every key when no image was accumulated.
        kwargs: ``torchmetrics.Metric`` options.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> metric = InsertionDeletionAUC(step_fraction=0.25)
        >>> metric.update(model, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 2]))
        >>> sorted(metric.compute())
        ['deletion', 'insertion', 'overall']
    """

    outputs = ("insertion", "deletion", "overall")

    deletion_total: Tensor

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_state(
            "deletion_total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, model: Model, images: Tensor, saliency: Tensor, target: Tensor) -> None:
        """Accumulate the AUCs of a batch (``images (B, C, H, W)``, ``saliency (B, H, W)``,
        ``target (B,)``)."""
        aucs = self._aucs(model, images, saliency, target)
        self._add(aucs["insertion"])  # total: insertion, count: images
        self.deletion_total += aucs["deletion"].detach().double().sum()

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """``{"insertion", "deletion", "overall"}`` means over all accumulated images."""
        name = type(self).__name__
        ins = _mean_of_sum(self.total, self.count, name, self.zero_division)
        dele = _mean_of_sum(self.deletion_total, self.count, name, self.zero_division)
        return {"insertion": ins, "deletion": dele, "overall": ins - dele}


class _OneModeAUC(_PerturbationAUC):
    """Mean AUC of one mode (``_modes[0]``); the other mode's substrate is never used."""

    def __init__(
        self,
        step_fraction: float = DEFAULT_STEP_FRACTION,
        substrate: Literal["blur", "zero"] = "blur",
        chunk_size: int = 128,
        blur_kernel_size: int = DEFAULT_BLUR_KERNEL_SIZE,
        blur_sigma: float = DEFAULT_BLUR_SIGMA,
        zero_division: float = 0.0,
        **kwargs: Any,
    ) -> None:
        substrates = {"insertion": "blur", "deletion": "blur", self._modes[0]: substrate}
        super().__init__(
            step_fraction,
            substrates["insertion"],  # type: ignore[arg-type]
            substrates["deletion"],  # type: ignore[arg-type]
            chunk_size,
            blur_kernel_size,
            blur_sigma,
            zero_division,
            **kwargs,
        )

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: float = 0.0
    ) -> SaliencyMetric:
        return cls(
            step_fraction=options.step_fraction,
            substrate=getattr(options, f"{cls._modes[0]}_substrate"),
            chunk_size=options.chunk_size,
            blur_kernel_size=options.blur_kernel_size,
            blur_sigma=options.blur_sigma,
            zero_division=zero_division,
        )


@SALIENCY_METRICS.register("insertion")
class InsertionAUC(_OneModeAUC):
    r"""Insertion AUC (higher is better): blurred image → image by decreasing saliency.

    .. math::
        \text{Ins} = \int_0^1 p_c\big(x^{(f)}_{\text{ins}}\big)\, df

    Args: as :class:`InsertionDeletionAUC`, with ``substrate`` = insertion's start image.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> metric = InsertionAUC(step_fraction=0.25)
        >>> metric.update(model, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 2]))
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    outputs = ("insertion",)
    _modes = ("insertion",)


@SALIENCY_METRICS.register("deletion")
class DeletionAUC(_OneModeAUC):
    r"""Deletion AUC (lower is better): pixels become the substrate by decreasing saliency.

    .. math::
        \text{Del} = \int_0^1 p_c\big(x^{(f)}_{\text{del}}\big)\, df

    Args: as :class:`InsertionDeletionAUC`, with ``substrate`` = what deleted pixels become.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> metric = DeletionAUC(step_fraction=0.25, substrate="zero")
        >>> metric.update(model, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 2]))
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    higher_is_better = False
    outputs = ("deletion",)
    _modes = ("deletion",)


class _BoxMetric(SaliencyMetric, _MeanOfValues):
    is_differentiable = False
    higher_is_better = True
    needs_boxes = True


@SALIENCY_METRICS.register("pointing_game")
class PointingGame(_BoxMetric):
    r"""Pointing-game accuracy Hits / (Hits + Misses) (Zhang et al., 2018) with a pixel tolerance.

    .. math::
        \text{Acc} = \frac{\#\text{hits}}{\#\text{hits} + \#\text{misses}}

    Images without boxes are skipped. See :func:`~lico_lightning.functional.pointing_game`
    for the hit rule (first maximum in row-major order; within ``tolerance`` px of any box).

    Args:
        tolerance: pixels (Zhang et al.: 15).
        zero_division: value returned when no image had a box.
        kwargs: ``torchmetrics.Metric`` options.

    Example:
        >>> sal = torch.zeros(2, 40, 40); sal[0, 5, 5] = 1; sal[1, 30, 30] = 1
        >>> metric = PointingGame()
        >>> metric.update(sal, [torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]])])
        >>> metric.compute()
        tensor(0.5000)
    """

    outputs = ("pointing_game",)

    def __init__(
        self, tolerance: float = DEFAULT_TOLERANCE, zero_division: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(zero_division=zero_division, **kwargs)
        check_positive("tolerance", tolerance, strict=False)
        self.tolerance = tolerance

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: float = 0.0
    ) -> SaliencyMetric:
        return cls(tolerance=options.tolerance, zero_division=zero_division)

    def update(self, saliency: Tensor, boxes: Sequence[Tensor]) -> None:
        """Accumulate a batch: ``saliency (B, H, W)``, ``boxes`` list of ``B`` ``(K_i, 4)``."""
        hits, valid = pointing_game(saliency, boxes, self.tolerance, reduction="none")
        self._add(hits[valid].float())


@SALIENCY_METRICS.register("energy_pointing_game")
class EnergyPointingGame(_BoxMetric):
    r"""Energy-based pointing game (Score-CAM): mean share of positive saliency inside the boxes.

    .. math::
        \text{E} = \frac{1}{B'}\sum_b \frac{\sum_{p \in \text{boxes}_b} s^+_p}{\sum_p s^+_p}

    over the ``B'`` images that have boxes. See
    :func:`~lico_lightning.functional.energy_pointing_game`.

    Args:
        zero_division: value returned when no image had a box.
        kwargs: ``torchmetrics.Metric`` options.

    Example:
        >>> sal = torch.zeros(1, 4, 4); sal[0, 0, 0] = 3.0; sal[0, 3, 3] = 1.0
        >>> metric = EnergyPointingGame()
        >>> metric.update(sal, [torch.tensor([[0.0, 0.0, 2.0, 2.0]])])
        >>> metric.compute()
        tensor(0.7500)
    """

    outputs = ("energy_pointing_game",)

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: float = 0.0
    ) -> SaliencyMetric:
        return cls(zero_division=zero_division)

    def update(self, saliency: Tensor, boxes: Sequence[Tensor]) -> None:
        """Accumulate a batch: ``saliency (B, H, W)``, ``boxes`` list of ``B`` ``(K_i, 4)``."""
        energy, valid = energy_pointing_game(saliency, boxes, reduction="none")
        self._add(energy[valid])


class _ConfidenceMetric(SaliencyMetric, _MeanOfValues):
    is_differentiable = False

    def __init__(self, zero_division: float = 0.0, **kwargs: Any) -> None:
        super().__init__(zero_division=zero_division, **kwargs)

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: float = 0.0
    ) -> SaliencyMetric:
        return cls(zero_division=zero_division)

    def _value(self, drop: Tensor, increase: Tensor) -> Tensor:
        raise NotImplementedError

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
        with _model_context(model):
            drop, increase = confidence_change(model, images, saliency, target, clean_probability)
        self._add(self._value(drop, increase))


@SALIENCY_METRICS.register("average_drop")
class AverageDrop(_ConfidenceMetric):
    r"""Average drop in confidence on the explanation map (Grad-CAM++; lower is better),
    as a fraction (×100 for the papers' %).

    .. math::
        \text{AD} = \frac1B \sum_b \frac{\max(0, Y_b - O_b)}{Y_b}

    See :func:`~lico_lightning.functional.average_drop`.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> metric = AverageDrop()
        >>> metric.update(model, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 2]))
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    higher_is_better = False
    outputs = ("average_drop",)

    def _value(self, drop: Tensor, increase: Tensor) -> Tensor:
        return drop


@SALIENCY_METRICS.register("increase_in_confidence")
class IncreaseInConfidence(_ConfidenceMetric):
    r"""Share of images whose target confidence rises on the explanation map (Grad-CAM++;
    higher is better).

    .. math::
        \text{IC} = \frac1B \sum_b \mathbb{1}[Y_b < O_b]

    See :func:`~lico_lightning.functional.increase_in_confidence`.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> metric = IncreaseInConfidence()
        >>> metric.update(model, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 2]))
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    higher_is_better = True
    outputs = ("increase_in_confidence",)

    def _value(self, drop: Tensor, increase: Tensor) -> Tensor:
        return increase.float()
