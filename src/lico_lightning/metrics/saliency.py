"""``torchmetrics`` accumulators for saliency-map quality: the classifier metrics of LICO
Table 1 (insertion, deletion, overall, average drop, increase in confidence) and the pointing
games, which score classifier saliency and dual-encoder grounding maps alike. Each class is the
mean of one :mod:`lico_lightning.functional` function (``InsertionAUC`` ↔ ``insertion_auc``,
``PointingGame`` ↔ ``pointing_game``, ...), and :data:`SALIENCY_METRICS` names them for
:class:`~lico_lightning.explain.SaliencyEvaluation` and the monitors.

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
from torchmetrics.utilities import dim_zero_cat

from lico_lightning._registry import Registry
from lico_lightning._safety import preserve_model_state
from lico_lightning._validation import check_choice, check_int, check_int_pair, check_real
from lico_lightning.functional import (
    DEFAULT_BLUR_KERNEL_SIZE,
    DEFAULT_BLUR_SIGMA,
    DEFAULT_STEP_FRACTION,
    DEFAULT_TOLERANCE,
    average_drop,
    deletion_auc,
    energy_pointing_game,
    increase_in_confidence,
    insertion_auc,
    insertion_deletion_auc,
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
        _check_protocol(self.step_fraction, self.chunk_size)
        check_choice("insertion_substrate", self.insertion_substrate, ["blur", "zero"])
        check_choice("deletion_substrate", self.deletion_substrate, ["blur", "zero"])
        check_real("tolerance", self.tolerance, low=0.0, strict=False)


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


def _check_protocol(step_fraction: float, chunk_size: int) -> None:
    check_real("step_fraction", step_fraction, low=0.0, high=1.0)
    check_int("chunk_size", chunk_size, 1)


class _PerturbationAUC(SaliencyMetric, _MeanOfValues):
    """Protocol knobs shared by the insertion/deletion metrics; ``total`` sums the first of
    :attr:`outputs`."""

    full_state_update = False
    is_differentiable = False
    higher_is_better: bool | None = True

    def __init__(
        self,
        step_fraction: float,
        chunk_size: int,
        blur_kernel_size: int,
        blur_sigma: float,
        zero_division: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(zero_division=zero_division, **kwargs)
        _check_protocol(step_fraction, chunk_size)
        check_int("blur_kernel_size", blur_kernel_size, 1)
        check_real("blur_sigma", blur_sigma, low=0.0)
        self._protocol: dict[str, Any] = {
            "step_fraction": step_fraction,
            "chunk_size": chunk_size,
            "blur_kernel_size": blur_kernel_size,
            "blur_sigma": blur_sigma,
        }
        # per-image AUCs of the latest ``update`` (not a state: never synced or checkpointed),
        # so a caller can show them without running the curves again
        self.last_values: dict[str, Tensor] = {}

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: float = 0.0
    ) -> SaliencyMetric:
        return cls(
            step_fraction=options.step_fraction,
            chunk_size=options.chunk_size,
            blur_kernel_size=options.blur_kernel_size,
            blur_sigma=options.blur_sigma,
            zero_division=zero_division,
            **cls._substrates_of(options),
        )

    @classmethod
    def _substrates_of(cls, options: SaliencyMetricOptions) -> dict[str, str]:
        raise NotImplementedError


@SALIENCY_METRICS.register("overall")
class InsertionDeletionAUC(_PerturbationAUC):
    r"""Insertion and deletion AUC (RISE / LICO Table 1) and their difference, "overall".

    .. math::
        \text{Overall} = \text{Ins} - \text{Del}

    The mean over images of :func:`~lico_lightning.functional.insertion_deletion_auc` (both
    curves from one pass). ``compute()`` returns ``{"insertion", "deletion", "overall"}``;
    ``higher_is_better`` refers to overall.

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
        super().__init__(
            step_fraction, chunk_size, blur_kernel_size, blur_sigma, zero_division, **kwargs
        )
        check_choice("insertion_substrate", insertion_substrate, ["blur", "zero"])
        check_choice("deletion_substrate", deletion_substrate, ["blur", "zero"])
        self.substrates: dict[str, Any] = {
            "insertion_substrate": insertion_substrate,
            "deletion_substrate": deletion_substrate,
        }
        self.add_state(
            "deletion_total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )

    @classmethod
    def _substrates_of(cls, options: SaliencyMetricOptions) -> dict[str, str]:
        return {
            "insertion_substrate": options.insertion_substrate,
            "deletion_substrate": options.deletion_substrate,
        }

    def update(self, model: Model, images: Tensor, saliency: Tensor, target: Tensor) -> None:
        """Accumulate the AUCs of a batch (``images (B, C, H, W)``, ``saliency (B, H, W)``,
        ``target (B,)``)."""
        with _model_context(model):
            ins, dele = insertion_deletion_auc(
                model,
                images,
                saliency,
                target,
                **self._protocol,
                **self.substrates,
                reduction="none",
            )
        self._add(ins)  # total: insertion, count: images
        self.deletion_total += dele.detach().double().sum()
        self.last_values = {"insertion": ins.detach(), "deletion": dele.detach()}

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """``{"insertion", "deletion", "overall"}`` means over all accumulated images."""
        name = type(self).__name__
        ins = _mean_of_sum(self.total, self.count, name, self.zero_division)
        dele = _mean_of_sum(self.deletion_total, self.count, name, self.zero_division)
        return {"insertion": ins, "deletion": dele, "overall": ins - dele}


class _OneModeAUC(_PerturbationAUC):
    _function: ClassVar[Callable[..., Tensor]]

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
        super().__init__(
            step_fraction, chunk_size, blur_kernel_size, blur_sigma, zero_division, **kwargs
        )
        self.substrate = check_choice("substrate", substrate, ["blur", "zero"])

    @classmethod
    def _substrates_of(cls, options: SaliencyMetricOptions) -> dict[str, str]:
        return {"substrate": getattr(options, f"{cls.outputs[0]}_substrate")}

    def update(self, model: Model, images: Tensor, saliency: Tensor, target: Tensor) -> None:
        """Accumulate the AUCs of a batch (``images (B, C, H, W)``, ``saliency (B, H, W)``,
        ``target (B,)``)."""
        function = type(self)._function
        with _model_context(model):
            aucs = function(
                model,
                images,
                saliency,
                target,
                substrate=self.substrate,
                **self._protocol,
                reduction="none",
            )
        self._add(aucs)
        self.last_values = {self.outputs[0]: aucs.detach()}


@SALIENCY_METRICS.register("insertion")
class InsertionAUC(_OneModeAUC):
    r"""Insertion AUC (higher is better): blurred image → image by decreasing saliency.

    .. math::
        \text{Ins} = \int_0^1 p_c\big(x^{(f)}_{\text{ins}}\big)\, df

    The mean over images of :func:`~lico_lightning.functional.insertion_auc`.

    Args: as :class:`InsertionDeletionAUC`, with ``substrate`` = insertion's start image.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> metric = InsertionAUC(step_fraction=0.25)
        >>> metric.update(model, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 2]))
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    outputs = ("insertion",)
    _function = staticmethod(insertion_auc)


@SALIENCY_METRICS.register("deletion")
class DeletionAUC(_OneModeAUC):
    r"""Deletion AUC (lower is better): pixels become the substrate by decreasing saliency.

    .. math::
        \text{Del} = \int_0^1 p_c\big(x^{(f)}_{\text{del}}\big)\, df

    The mean over images of :func:`~lico_lightning.functional.deletion_auc`.

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
    _function = staticmethod(deletion_auc)


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
    needs_boxes = True
    outputs = ("pointing_game",)

    def __init__(
        self,
        tolerance: float = DEFAULT_TOLERANCE,
        image_size: tuple[int, int] | None = None,
        zero_division: float | None = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(zero_division=zero_division, **kwargs)
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
    needs_boxes = True
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
        energy = energy[~energy.isnan()]
        self._add(energy)
        if self.reduction == "median":
            self.energies.append(energy.float())

    def compute(self) -> Tensor:
        if self.reduction == "mean":
            return super().compute()
        state: list[Tensor] | Tensor = self.energies  # a list before, a tensor after a DDP sync
        values = dim_zero_cat(state) if not isinstance(state, list) or state else None
        if values is None or values.numel() == 0:
            return _mean_of_sum(self.total, self.count, type(self).__name__, self.zero_division)
        return values.median()


class _ConfidenceMetric(SaliencyMetric, _MeanOfValues):
    is_differentiable = False
    _function: ClassVar[Callable[..., Tensor]]

    def __init__(self, zero_division: float = 0.0, **kwargs: Any) -> None:
        super().__init__(zero_division=zero_division, **kwargs)

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: float = 0.0
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
