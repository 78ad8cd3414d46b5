"""Saliency evaluation as in LICO §4.3 / Table 1 and Appendix B, for any classifier checkpoint.

:func:`evaluate_saliency` runs chosen explainers over a dataloader and averages chosen metrics
(insertion, deletion, overall = insertion − deletion, average drop, increase in confidence,
pointing game, energy pointing game). :func:`compute_saliency_metrics` is the per-batch core,
shared with :class:`~lico_lightning.callbacks.SaliencyMonitor`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lico_lightning._safety import module_device, preserve_model_state
from lico_lightning._validation import check_choice, check_positive
from lico_lightning.explain.base import build_explainers, list_explainers
from lico_lightning.functional.saliency import (
    DEFAULT_BLUR_KERNEL_SIZE,
    DEFAULT_BLUR_SIGMA,
    DEFAULT_STEP_FRACTION,
    DEFAULT_TOLERANCE,
    _check_step_and_chunk,
    _perturbation_aucs,
    _probability_of,
    check_logits,
    confidence_change,
    energy_pointing_game,
    pointing_game,
)

__all__ = [
    "SALIENCY_METRICS",
    "SaliencyMetricOptions",
    "compute_saliency_metrics",
    "evaluate_saliency",
    "list_saliency_metrics",
    "parse_batch",
]

#: Metric names and whether a higher value is better.
SALIENCY_METRICS: dict[str, bool] = {
    "insertion": True,
    "deletion": False,
    "overall": True,
    "average_drop": False,
    "increase_in_confidence": True,
    "pointing_game": True,
    "energy_pointing_game": True,
}
#: Metrics that need bounding boxes.
BOX_METRICS = frozenset({"pointing_game", "energy_pointing_game"})


def list_saliency_metrics() -> list[str]:
    """Metric names accepted by :func:`evaluate_saliency` and the ``SaliencyMonitor``.

    Example:
        >>> list_saliency_metrics()[:3]
        ['average_drop', 'deletion', 'energy_pointing_game']
    """
    return sorted(SALIENCY_METRICS)


def check_metric_names(metrics: Sequence[str]) -> list[str]:
    """Raise ``ValueError`` listing the available names for an unknown metric."""
    if isinstance(metrics, str):
        metrics = [metrics]
    for name in metrics:
        if name not in SALIENCY_METRICS:
            raise ValueError(
                f"Expected a saliency metric name, but got {name!r}. "
                f"Available: {', '.join(list_saliency_metrics())}."
            )
    return list(dict.fromkeys(metrics))


def check_method_names(methods: Sequence[str]) -> list[str]:
    """Raise ``ValueError`` listing the available explainers for an unknown name."""
    if isinstance(methods, str):
        methods = [methods]
    for name in methods:
        if name not in list_explainers():
            raise ValueError(
                f"Expected an explainer name, but got {name!r}. Available: {', '.join(list_explainers())}."
            )
    return list(dict.fromkeys(methods))


@dataclass
class SaliencyMetricOptions:
    """Protocol knobs shared by every metric computation.

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


def parse_batch(batch: Any) -> tuple[Tensor, Tensor, list[Tensor] | None]:
    """Read ``(images, labels, boxes)`` from a batch.

    Accepted: ``(image, target)``, ``(image, target, index)``, ``(image, target, boxes)`` with
    ``boxes`` a list of ``(K_i, 4)`` tensors, or a mapping with keys ``image``/``images``,
    ``target``/``label``/``labels`` and optional ``boxes``.

    Example:
        >>> x, y, boxes = parse_batch((torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), torch.tensor([5, 6])))
        >>> boxes is None
        True
    """
    boxes = None
    if isinstance(batch, Mapping):
        images = next((batch[k] for k in ("image", "images") if k in batch), None)
        labels = next((batch[k] for k in ("target", "label", "labels") if k in batch), None)
        boxes = batch.get("boxes")
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        images, labels = batch[0], batch[1]
        for extra in batch[2:]:
            if isinstance(extra, (list, tuple)) and all(isinstance(b, Tensor) for b in extra):
                boxes = extra
    else:
        images = labels = None
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
        raise TypeError(
            "Expected a batch (image, target[, index | boxes]) or a mapping with 'image' and "
            f"'target', but got {type(batch).__name__}."
        )
    return images, labels, (list(boxes) if boxes is not None else None)


def compute_saliency_metrics(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    target: Tensor,
    metrics: Sequence[str],
    boxes: Sequence[Tensor] | None = None,
    options: SaliencyMetricOptions | None = None,
    clean_probability: Tensor | None = None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-sample values of the chosen metrics for one batch of maps.

    Insertion and deletion curves are computed once even when ``overall`` is also asked for;
    average drop and increase share one forward pass.

    Args:
        model: the classifier (run in eval mode, its flags restored).
        images: ``(B, C, H, W)``.
        saliency: ``(B, H, W)``.
        target: ``(B,)`` long — the explained classes.
        metrics: names from :func:`list_saliency_metrics`.
        boxes: list of ``B`` ``(K_i, 4)`` tensors, needed by the pointing games.
        options: protocol knobs.
        clean_probability: ``(B,)`` softmax probability of ``target`` on ``images`` when the
            caller has it (see :func:`explained_target`); saves the confidence metrics' clean
            forward pass, which would otherwise be repeated for every method.

    Returns:
        ``{name: (values (B,), valid (B,) bool)}`` — ``valid`` is False for skipped images
        (pointing games on images without boxes).
    """
    names = check_metric_names(metrics)
    opts = options or SaliencyMetricOptions()
    needs_boxes = [n for n in names if n in BOX_METRICS]
    if needs_boxes and boxes is None:
        raise ValueError(
            f"Expected `boxes` (a list of (K_i, 4) tensors per image) for {needs_boxes}, but got None."
        )
    out: dict[str, tuple[Tensor, Tensor]] = {}
    all_valid = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
    with preserve_model_state(model), torch.no_grad():
        aucs: dict[str, Tensor] = {}
        substrates = {
            mode: substrate
            for mode, substrate in (
                ("insertion", opts.insertion_substrate),
                ("deletion", opts.deletion_substrate),
            )
            if mode in names or "overall" in names
        }
        if substrates:  # both modes: one pass, shared endpoints evaluated once
            aucs.update(
                _perturbation_aucs(
                    model,
                    images,
                    saliency,
                    target,
                    substrates,
                    step_fraction=opts.step_fraction,
                    chunk_size=opts.chunk_size,
                    blur_kernel_size=opts.blur_kernel_size,
                    blur_sigma=opts.blur_sigma,
                )
            )
        if "average_drop" in names or "increase_in_confidence" in names:
            drop, increase = confidence_change(model, images, saliency, target, clean_probability)
            aucs["average_drop"], aucs["increase_in_confidence"] = drop, increase.float()
    if "overall" in names:
        aucs["overall"] = aucs["insertion"] - aucs["deletion"]
    for name in names:
        if name == "pointing_game":
            hits, valid = pointing_game(saliency, boxes, opts.tolerance, reduction="none")  # type: ignore[arg-type, misc]
            out[name] = (hits.float(), valid)
        elif name == "energy_pointing_game":
            energy, valid = energy_pointing_game(saliency, boxes, reduction="none")  # type: ignore[arg-type, misc]
            out[name] = (energy, valid)
        else:
            out[name] = (aucs[name], all_valid)
    return out


def explained_target(
    model: nn.Module, images: Tensor, labels: Tensor, target: Literal["predicted", "label"]
) -> tuple[Tensor, Tensor | None]:
    """The class to explain — the model's top-1 prediction (protocol) or the label — and, when
    the model had to run to choose it, the softmax probability of that class (else ``None``)."""
    if target == "label":
        return labels.long(), None
    with preserve_model_state(model), torch.no_grad():
        logits = check_logits(model(images), images.shape[0])
    explained = logits.argmax(1)
    return explained, _probability_of(logits, explained)


def evaluate_saliency(
    model: nn.Module,
    dataloader: Iterable[Any],
    methods: Sequence[str] = ("gradcam",),
    metrics: Sequence[str] = ("insertion", "deletion", "overall"),
    *,
    layer: nn.Module | str | None = None,
    explainer_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    target: Literal["predicted", "label"] = "predicted",
    options: SaliencyMetricOptions | None = None,
    max_batches: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    r"""Evaluate saliency methods on a trained classifier (LICO Table 1 / Appendix B protocol).

    For every batch, each method explains the ``target`` class (default: the model's top-1
    prediction, as in RISE / Score-CAM) and the metrics are averaged over all images
    (pointing games over images with boxes). Compare a baseline and a LICO checkpoint by
    calling it on both.

    .. math::
        \text{Overall} = \text{Ins} - \text{Del}

    Args:
        model: classifier returning logits (e.g. a ``LICOClassifier`` or its backbone).
        dataloader: batches ``(image, target[, index | boxes])`` or mappings (see
            :func:`parse_batch`).
        methods: explainer names (:func:`~lico_lightning.explain.list_explainers`).
        metrics: metric names (:func:`list_saliency_metrics`).
        layer: target layer for CAM methods (``None`` → model default / last feature map).
        explainer_kwargs: per-method keyword arguments, e.g. ``{"rise": {"num_masks": 2000}}``.
        target: ``"predicted"`` (protocol) or ``"label"``.
        options: protocol knobs (:class:`SaliencyMetricOptions`).
        max_batches: stop after this many batches.
        device: move batches here (default: the model's device).
        progress: tqdm bar over batches.

    Returns:
        ``{"{method}/{metric}": value}`` (NaN, with a warning, for a metric no image was
        valid for, e.g. pointing games without any box).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...     nn.Flatten(), nn.Linear(4, 3))
        >>> data = [(torch.randn(2, 3, 16, 16), torch.tensor([0, 1]))]
        >>> res = evaluate_saliency(net, data, ["gradcam"], ["insertion", "deletion", "overall"],
        ...     layer="1", progress=False)
        >>> sorted(res)
        ['gradcam/deletion', 'gradcam/insertion', 'gradcam/overall']
    """
    method_names = check_method_names(methods)
    metric_names = check_metric_names(metrics)
    check_choice("target", target, ["predicted", "label"])
    if max_batches is not None:
        check_positive("max_batches", max_batches)
    opts = options or SaliencyMetricOptions()
    explainers = build_explainers(model, method_names, layer, explainer_kwargs)
    if device is None:
        device = module_device(model, torch.device("cpu"))

    keys = [(m, k) for m in method_names for k in metric_names]
    # sums and counts stay on the device: one host copy at the end, not two per batch and metric
    sums = {key: torch.zeros((), dtype=torch.float64, device=device) for key in keys}
    counts = {key: torch.zeros((), dtype=torch.long, device=device) for key in keys}
    for index, batch in enumerate(tqdm(dataloader, desc="saliency", disable=not progress)):
        if max_batches is not None and index >= max_batches:
            break
        images, labels, boxes = parse_batch(batch)
        images, labels = images.to(device), labels.to(device)
        explained, clean_probability = explained_target(model, images, labels, target)
        for name, explainer in explainers.items():
            saliency = explainer.attribute(images, explained)
            values = compute_saliency_metrics(
                model, images, saliency, explained, metric_names, boxes, opts, clean_probability
            )
            for metric, (v, valid) in values.items():
                sums[(name, metric)] += (v.double() * valid).sum()
                counts[(name, metric)] += valid.sum()
    sums = {key: value.cpu() for key, value in sums.items()}
    counts = {key: value.cpu() for key, value in counts.items()}
    empty = [f"{m}/{k}" for m, k in counts if counts[(m, k)] == 0]
    if empty:
        warnings.warn(
            f"evaluate_saliency: no valid image for {empty} (e.g. no image had a box); "
            "reporting NaN for them.",
            stacklevel=2,
        )
    return {
        f"{m}/{k}": float(sums[(m, k)] / counts[(m, k)]) if counts[(m, k)] > 0 else float("nan")
        for m, k in sums
    }
