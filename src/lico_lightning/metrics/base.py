"""What every metric of an explanation evaluation declares, and the two registries.

A metric that an evaluation may run declares ``needs``: the names of the inputs its
``update`` takes, in its order. :class:`~lico_lightning.evaluation.SaliencyEvaluation` and
:class:`~lico_lightning.evaluation.GroundingEvaluation` hand every metric exactly those inputs
(positionally) and skip a metric for a batch that lacks one of them (e.g. images without
boxes) — skipped, not failed. The names each evaluation offers are
:data:`SALIENCY_INPUTS` and :data:`GROUNDING_INPUTS`; a metric asking for another name is
rejected when the evaluation is built.

Adding a metric: write its formula in :mod:`lico_lightning.functional`, its class (with
``needs``) next to its formula's file name here, and register it in
:data:`SALIENCY_METRICS` (a :class:`SaliencyMetric`, built with
:meth:`SaliencyMetric.from_options`) or :data:`GROUNDING_METRICS` (a class or factory
called with the probes' ``image_size``). Every evaluation and monitor then runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor, nn
from torchmetrics import Metric

from lico_lightning._registry import Registry
from lico_lightning._safety import preserve_model_state
from lico_lightning._validation import check_choice, check_int, check_real
from lico_lightning.functional import (
    DEFAULT_BLUR_KERNEL_SIZE,
    DEFAULT_BLUR_SIGMA,
    DEFAULT_STEP_FRACTION,
    DEFAULT_TOLERANCE,
)

__all__ = [
    "GROUNDING_INPUTS",
    "GROUNDING_METRICS",
    "SALIENCY_INPUTS",
    "SALIENCY_METRICS",
    "SaliencyMetric",
    "SaliencyMetricOptions",
    "create_grounding_metric",
    "create_saliency_metric",
    "list_grounding_metrics",
    "list_saliency_metrics",
    "metric_needs",
]

Model = Callable[[Tensor], Tensor]

#: The inputs :class:`~lico_lightning.evaluation.SaliencyEvaluation` offers a metric:
#: ``model`` (the classifier), ``images`` ``(B, C, H, W)``, ``saliency`` ``(B, H, W)``,
#: ``target`` ``(B,)`` explained classes, ``clean_probability`` ``(B,)`` the target's softmax
#: probability on the clean images (or ``None`` when no forward pass chose the target),
#: ``boxes`` (``B`` tensors ``(K_i, 4)``; absent for batches without boxes); and, for batches
#: with a ground-truth dict (``data.ShortcutDataModule`` items), ``target_mask`` /
#: ``cue_mask`` ``(B, H, W)`` bool masks of the target object / the spurious cue,
#: ``object_masks`` ``(B, O, H, W)`` every object's mask (``target, cue, distractor_0, ...``)
#: and ``object_effects`` ``(B, O)``: the drop of the explained class's logit when the scene is
#: re-rendered without each object (computed only when a metric needs it, from the batch's
#: ``counterfactuals`` ``(B, O, C, H, W)``: ``O`` extra forwards per image).
SALIENCY_INPUTS = frozenset(
    {
        "model",
        "images",
        "saliency",
        "target",
        "clean_probability",
        "boxes",
        "target_mask",
        "cue_mask",
        "object_masks",
        "object_effects",
    }
)

#: The inputs :class:`~lico_lightning.evaluation.GroundingEvaluation` offers a metric:
#: ``saliency`` ``(B, Hp, Wp)`` phrase maps, ``boxes`` ``(B, 4)`` the phrases' boxes,
#: ``distractor_saliency`` / ``distractor_boxes`` the maps and distractor boxes of the ``R``
#: probes that have one (absent when none has), ``deletion_curves`` / ``insertion_curves``
#: ``(B, J + 1)`` conditional image deletion / insertion curves of the caption's whole image
#: map (computed only when a metric needs them).
GROUNDING_INPUTS = frozenset(
    {
        "saliency",
        "boxes",
        "distractor_saliency",
        "distractor_boxes",
        "deletion_curves",
        "insertion_curves",
    }
)


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
        needs: the inputs ``update`` takes, in its order (see :data:`SALIENCY_INPUTS`); a batch
            without one of them (e.g. no ``boxes``) is skipped by the evaluations.
        outputs: the names ``compute()`` reports: one (a tensor) or several (a dict).
    """

    needs: tuple[str, ...] = ()
    outputs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_options(
        cls, options: SaliencyMetricOptions, zero_division: float = 0.0
    ) -> SaliencyMetric:
        """Build the metric with the protocol knobs of ``options`` (default: ``cls()``, for a
        metric without knobs); ``zero_division`` is its value when no sample was valid."""
        return cls()


#: Classifier-saliency metrics by name (``list_saliency_metrics()``); each entry is a
#: :class:`SaliencyMetric` class, built with :meth:`SaliencyMetric.from_options`.
SALIENCY_METRICS: Registry[type[SaliencyMetric]] = Registry("saliency metric", base=SaliencyMetric)

#: Grounding metrics of dual-encoder explanations by name (``list_grounding_metrics()``);
#: each entry is a class or factory ``entry(image_size) -> Metric`` whose metric declares
#: ``needs`` among :data:`GROUNDING_INPUTS`. The ``*_distractor`` variants score the same map
#: against the probe's distractor box; ``cid`` / ``cii`` score the whole caption's image map
#: by conditional deletion / insertion of image patches.
GROUNDING_METRICS: Registry[Callable[[tuple[int, int] | None], Metric]] = Registry(
    "grounding metric"
)


def list_saliency_metrics() -> list[str]:
    """Metric names accepted by :func:`~lico_lightning.evaluation.evaluate_saliency`,
    :class:`~lico_lightning.evaluation.SaliencyEvaluation` and the ``SaliencyMonitor``.

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


def list_grounding_metrics() -> list[str]:
    """Metric names accepted by :class:`~lico_lightning.evaluation.GroundingEvaluation` and
    the ``GroundingMonitor``.

    Example:
        >>> from lico_lightning.metrics import list_grounding_metrics
        >>> {"pga", "pge", "cid"} <= set(list_grounding_metrics())
        True
    """
    return GROUNDING_METRICS.names()


def create_grounding_metric(name: str, image_size: tuple[int, int] | None = None) -> Metric:
    """The registered grounding metric ``name`` for probes of ``image_size`` ``(H, W)``.

    Example:
        >>> from lico_lightning.metrics import create_grounding_metric
        >>> metric = create_grounding_metric("pga_distractor")
        >>> type(metric).__name__, metric.needs
        ('PointingGame', ('distractor_saliency', 'distractor_boxes'))
    """
    return GROUNDING_METRICS.get(name)(image_size)


def metric_needs(name: str, metric: object, offered: frozenset[str]) -> tuple[str, ...]:
    """The inputs ``metric`` (registered as ``name``) declares, checked against the names an
    evaluation ``offered``.

    Raises:
        TypeError: the metric declares no ``needs`` (a tuple of input names).
        ValueError: it needs an input the evaluation never offers.

    Example:
        >>> from lico_lightning.metrics import create_saliency_metric
        >>> metric_needs("pointing_game", create_saliency_metric("pointing_game"), SALIENCY_INPUTS)
        ('saliency', 'boxes')
    """
    needs = getattr(metric, "needs", None)
    if not isinstance(needs, tuple) or not needs or not all(isinstance(n, str) for n in needs):
        raise TypeError(
            f"Expected metric {name!r} to declare `needs`, a tuple of the input names its "
            f"update takes (among {sorted(offered)}), but got {needs!r}."
        )
    unknown = [n for n in needs if n not in offered]
    if unknown:
        raise ValueError(
            f"Expected the inputs of metric {name!r} among {sorted(offered)}, but got {unknown}."
        )
    return needs


def _model_context(model: Model) -> Any:
    return preserve_model_state(model) if isinstance(model, nn.Module) else nullcontext()


def _check_protocol(step_fraction: float, chunk_size: int) -> None:
    check_real("step_fraction", step_fraction, low=0.0, high=1.0)
    check_int("chunk_size", chunk_size, 1)
