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
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics import Metric

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
    "AverageDrop",
    "DeletionAUC",
    "EnergyPointingGame",
    "IncreaseInConfidence",
    "InsertionAUC",
    "InsertionDeletionAUC",
    "PointingGame",
]

Model = Callable[[Tensor], Tensor]


def _model_context(model: Model) -> Any:
    return preserve_model_state(model) if isinstance(model, nn.Module) else nullcontext()


class _PerturbationAUC(Metric):
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_step_and_chunk(step_fraction, chunk_size)
        check_choice("insertion_substrate", insertion_substrate, ["blur", "zero"])
        check_choice("deletion_substrate", deletion_substrate, ["blur", "zero"])
        self.step_fraction = step_fraction
        self.substrates = {"insertion": insertion_substrate, "deletion": deletion_substrate}
        self.chunk_size = chunk_size
        self.blur_kernel_size = blur_kernel_size
        self.blur_sigma = blur_sigma

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


class InsertionDeletionAUC(_PerturbationAUC):
    r"""Insertion and deletion AUC (RISE / LICO Table 1) and their difference, "overall".

    .. math::
        \text{Overall} = \text{Ins} - \text{Del}

    See :func:`~lico_lightning.functional.insertion_auc` for the protocol. ``compute()``
    returns ``{"insertion", "deletion", "overall"}``; ``higher_is_better`` refers to overall.

    Args:
        step_fraction: share of pixels per step (LICO: 0.036).
        insertion_substrate: start image of insertion, ``"blur"`` (protocol) or ``"zero"``.
        deletion_substrate: what deleted pixels become, ``"blur"`` or ``"zero"``.
        chunk_size: perturbed images per forward pass.
        blur_kernel_size: Gaussian kernel (RISE: 11).
        blur_sigma: Gaussian sigma (RISE: 5).
        kwargs: ``torchmetrics.Metric`` options.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> metric = InsertionDeletionAUC(step_fraction=0.25)
        >>> metric.update(model, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 2]))
        >>> sorted(metric.compute())
        ['deletion', 'insertion', 'overall']
    """

    insertion_sum: Tensor
    deletion_sum: Tensor
    count: Tensor

    def __init__(
        self,
        step_fraction: float = DEFAULT_STEP_FRACTION,
        insertion_substrate: Literal["blur", "zero"] = "blur",
        deletion_substrate: Literal["blur", "zero"] = "blur",
        chunk_size: int = 128,
        blur_kernel_size: int = DEFAULT_BLUR_KERNEL_SIZE,
        blur_sigma: float = DEFAULT_BLUR_SIGMA,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            step_fraction,
            insertion_substrate,
            deletion_substrate,
            chunk_size,
            blur_kernel_size,
            blur_sigma,
            **kwargs,
        )
        for name in ("insertion_sum", "deletion_sum"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, model: Model, images: Tensor, saliency: Tensor, target: Tensor) -> None:
        """Accumulate the AUCs of a batch (``images (B, C, H, W)``, ``saliency (B, H, W)``,
        ``target (B,)``)."""
        aucs = self._aucs(model, images, saliency, target)
        self.insertion_sum += aucs["insertion"].double().sum()
        self.deletion_sum += aucs["deletion"].double().sum()
        self.count += images.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """``{"insertion", "deletion", "overall"}`` means over all accumulated images."""
        name = type(self).__name__
        ins = _mean_of_sum(self.insertion_sum, self.count, name, 0.0)
        dele = _mean_of_sum(self.deletion_sum, self.count, name, 0.0)
        return {"insertion": ins, "deletion": dele, "overall": ins - dele}


class _OneModeAUC(_PerturbationAUC, _MeanOfValues):
    """Mean AUC of one mode (``_modes[0]``); the other mode's substrate is never used."""

    def __init__(
        self,
        step_fraction: float = DEFAULT_STEP_FRACTION,
        substrate: Literal["blur", "zero"] = "blur",
        chunk_size: int = 128,
        blur_kernel_size: int = DEFAULT_BLUR_KERNEL_SIZE,
        blur_sigma: float = DEFAULT_BLUR_SIGMA,
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
            zero_division=0.0,
            **kwargs,
        )

    def update(self, model: Model, images: Tensor, saliency: Tensor, target: Tensor) -> None:
        """Accumulate the AUCs of a batch (``images (B, C, H, W)``, ``saliency (B, H, W)``,
        ``target (B,)``)."""
        self._add(self._aucs(model, images, saliency, target)[self._modes[0]])


class InsertionAUC(_OneModeAUC):
    r"""Insertion AUC (higher is better): blurred image → image by decreasing saliency.

    .. math::
        \text{Ins} = \int_0^1 p_c\big(x^{(f)}_{\text{ins}}\big)\, df

    Args: as :class:`InsertionDeletionAUC` (``substrate`` = insertion's start image).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> metric = InsertionAUC(step_fraction=0.25)
        >>> metric.update(model, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 2]))
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    _modes = ("insertion",)


class DeletionAUC(_OneModeAUC):
    r"""Deletion AUC (lower is better): pixels become the substrate by decreasing saliency.

    .. math::
        \text{Del} = \int_0^1 p_c\big(x^{(f)}_{\text{del}}\big)\, df

    Args: as :class:`InsertionDeletionAUC` (``substrate`` = what deleted pixels become).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> metric = DeletionAUC(step_fraction=0.25, substrate="zero")
        >>> metric.update(model, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 2]))
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    higher_is_better = False
    _modes = ("deletion",)


class PointingGame(_MeanOfValues):
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

    is_differentiable = False
    higher_is_better = True

    def __init__(
        self, tolerance: float = DEFAULT_TOLERANCE, zero_division: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(zero_division=zero_division, **kwargs)
        check_positive("tolerance", tolerance, strict=False)
        self.tolerance = tolerance

    def update(self, saliency: Tensor, boxes: Sequence[Tensor]) -> None:
        """Accumulate a batch: ``saliency (B, H, W)``, ``boxes`` list of ``B`` ``(K_i, 4)``."""
        hits, valid = pointing_game(saliency, boxes, self.tolerance, reduction="none")
        self._add(hits[valid].float())


class EnergyPointingGame(_MeanOfValues):
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

    is_differentiable = False
    higher_is_better = True

    def __init__(self, zero_division: float = 0.0, **kwargs: Any) -> None:
        super().__init__(zero_division=zero_division, **kwargs)

    def update(self, saliency: Tensor, boxes: Sequence[Tensor]) -> None:
        """Accumulate a batch: ``saliency (B, H, W)``, ``boxes`` list of ``B`` ``(K_i, 4)``."""
        energy, valid = energy_pointing_game(saliency, boxes, reduction="none")
        self._add(energy[valid])


class _ConfidenceMetric(_MeanOfValues):
    is_differentiable = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(zero_division=0.0, **kwargs)

    def _value(self, drop: Tensor, increase: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, model: Model, images: Tensor, saliency: Tensor, target: Tensor) -> None:
        """Accumulate a batch (``images (B, C, H, W)``, ``saliency (B, H, W)``, ``target (B,)``)."""
        with _model_context(model):
            drop, increase = confidence_change(model, images, saliency, target)
        self._add(self._value(drop, increase))


class AverageDrop(_ConfidenceMetric):
    r"""Average drop in confidence on the explanation map (Grad-CAM++; lower is better),
    as a fraction (×100 for the papers' %).

    .. math::
        \text{AD} = \frac1B \sum_b \frac{\max(0, Y_b - O_b)}{Y_b}

    See :func:`~lico_lightning.functional.confidence_change`.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> metric = AverageDrop()
        >>> metric.update(model, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 2]))
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    higher_is_better = False

    def _value(self, drop: Tensor, increase: Tensor) -> Tensor:
        return drop


class IncreaseInConfidence(_ConfidenceMetric):
    r"""Share of images whose target confidence rises on the explanation map (Grad-CAM++;
    higher is better).

    .. math::
        \text{IC} = \frac1B \sum_b \mathbb{1}[Y_b < O_b]

    See :func:`~lico_lightning.functional.confidence_change`.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> metric = IncreaseInConfidence()
        >>> metric.update(model, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 2]))
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    higher_is_better = True

    def _value(self, drop: Tensor, increase: Tensor) -> Tensor:
        return increase.float()
