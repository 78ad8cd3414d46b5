r"""``torchmetrics`` accumulators of perturbation curves: insertion, deletion and overall
(LICO Table 1, RISE) for classifiers, and conditional insertion / deletion (CII / CID, CTI / CTD)
for dual encoders. Each is the mean of one :mod:`lico_lightning.functional.perturbation`
function (``InsertionAUC`` ↔ ``insertion_auc``, ``ConditionalDeletionAUC`` ↔ ``curve_auc``).

Every state is a sum with ``dist_reduce_fx="sum"`` (numerator and count), so the value over
several processes equals the value over the union of their samples. Metrics that need the
classifier take it in :meth:`update` (it is not stored, so the metric holds no model weights);
they run it in eval mode under ``no_grad`` and restore its train/eval flags afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch  # noqa: F401 - the doctest examples use it
from torch import Tensor

from lico_lightning._validation import check_choice, check_int, check_real
from lico_lightning.functional import (
    DEFAULT_BLUR_KERNEL_SIZE,
    DEFAULT_BLUR_SIGMA,
    DEFAULT_STEP_FRACTION,
    curve_auc,
    deletion_auc,
    insertion_auc,
    insertion_deletion_auc,
)
from lico_lightning.metrics._mean import ZeroDivision, _mean_of_sum, _MeanOfPairs, _MeanOfValues
from lico_lightning.metrics.base import (
    GROUNDING_METRICS,
    SALIENCY_METRICS,
    Model,
    SaliencyMetric,
    SaliencyMetricOptions,
    _check_protocol,
    _model_context,
)

__all__ = [
    "ConditionalDeletionAUC",
    "ConditionalInsertionAUC",
    "DeletionAUC",
    "InsertionAUC",
    "InsertionDeletionAUC",
]


class _PerturbationAUC(SaliencyMetric, _MeanOfValues):
    """Protocol knobs shared by the insertion/deletion metrics; ``total`` sums the first of
    :attr:`outputs`."""

    full_state_update = False
    is_differentiable = False
    higher_is_better: bool | None = True
    needs = ("model", "images", "saliency", "target")

    def __init__(
        self,
        step_fraction: float,
        chunk_size: int,
        blur_kernel_size: int,
        blur_sigma: float,
        zero_division: ZeroDivision,
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
        cls, options: SaliencyMetricOptions, zero_division: ZeroDivision = "warn"
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
class InsertionDeletionAUC(_PerturbationAUC, _MeanOfPairs):
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
        zero_division: value of every key when no image was accumulated: ``"warn"`` (NaN
            and a warning), a float (with a warning unless NaN), or ``None`` (raise).
        kwargs: ``torchmetrics.Metric`` options.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> metric = InsertionDeletionAUC(step_fraction=0.25)
        >>> metric.update(model, torch.randn(2, 1, 4, 4), torch.rand(2, 4, 4), torch.tensor([0, 2]))
        >>> sorted(metric.compute())
        ['deletion', 'insertion', 'overall']
    """

    outputs = ("insertion", "deletion", "overall")

    def __init__(
        self,
        step_fraction: float = DEFAULT_STEP_FRACTION,
        insertion_substrate: Literal["blur", "zero"] = "blur",
        deletion_substrate: Literal["blur", "zero"] = "blur",
        chunk_size: int = 128,
        blur_kernel_size: int = DEFAULT_BLUR_KERNEL_SIZE,
        blur_sigma: float = DEFAULT_BLUR_SIGMA,
        zero_division: ZeroDivision = "warn",
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
        self._add_pair(ins, dele)  # total: insertion, second_total: deletion, count: images
        self.last_values = {"insertion": ins.detach(), "deletion": dele.detach()}

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """``{"insertion", "deletion", "overall"}`` means over all accumulated images."""
        name = type(self).__name__
        ins = _mean_of_sum(self.total, self.count, name, self.zero_division)
        dele = _mean_of_sum(self.second_total, self.count, name, self.zero_division)
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
        zero_division: ZeroDivision = "warn",
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


class _CurveAUC(_MeanOfValues):
    """Mean of :func:`~lico_lightning.functional.curve_auc` over evenly spaced curves; the two
    subclasses differ only in which direction is better (and which curve they read)."""

    is_differentiable = False
    needs: tuple[str, ...] = ()

    def update(self, curves: Tensor) -> None:
        """Add ``(B, J + 1)`` score curves sampled at fractions ``0, 1/J, ..., 1``."""
        self._add(curve_auc(curves))


class ConditionalInsertionAUC(_CurveAUC):
    """Mean area under conditional insertion curves (CII for images, CTI for captions).

    The features of one input are inserted, most attributed first, while the other input stays
    unchanged; higher is better.

    Example:
        >>> metric = ConditionalInsertionAUC()
        >>> metric.update(torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]))
        >>> metric.compute()
        tensor(0.5000)
    """

    higher_is_better = True
    needs = ("insertion_curves",)


class ConditionalDeletionAUC(_CurveAUC):
    """Mean area under conditional deletion curves (CID for images, CTD for captions).

    The features of one input are removed, most attributed first, while the other input stays
    unchanged; lower is better.

    Example:
        >>> metric = ConditionalDeletionAUC()
        >>> metric.update(torch.tensor([[1.0, 0.0, 0.0]]))
        >>> metric.compute()
        tensor(0.2500)
    """

    higher_is_better = False
    needs = ("deletion_curves",)


GROUNDING_METRICS.register("cid", lambda image_size: ConditionalDeletionAUC())
GROUNDING_METRICS.register("cii", lambda image_size: ConditionalInsertionAUC())
