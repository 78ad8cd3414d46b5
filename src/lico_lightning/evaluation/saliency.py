"""Saliency evaluation as in LICO §4.3 / Table 1 and Appendix B, for any classifier checkpoint.

:func:`evaluate_saliency` runs chosen explainers over a dataloader and averages chosen metrics
(insertion, deletion, overall = insertion − deletion, average drop, increase in confidence,
pointing game, energy pointing game) through :class:`SaliencyEvaluation`, which the
:class:`~lico_lightning.callbacks.SaliencyMonitor` uses as well: one ``MetricCollection`` of
:mod:`lico_lightning.metrics` classes per method, the only accumulators of these metrics.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from tqdm.auto import tqdm

from lico_lightning._safety import module_device, preserve_model_state
from lico_lightning._validation import check_choice, check_logits, check_positive
from lico_lightning.evaluation._base import Inputs, _MethodEvaluation, check_names
from lico_lightning.explain import EXPLAINERS, Explainer, build_explainers
from lico_lightning.functional import target_probability
from lico_lightning.metrics import SALIENCY_INPUTS, SALIENCY_METRICS, SaliencyMetricOptions

__all__ = [
    "SaliencyEvaluation",
    "check_saliency_names",
    "evaluate_saliency",
    "metrics_needing",
    "parse_batch",
]


def check_saliency_names(
    methods: Sequence[str], metrics: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Checked, de-duplicated explainer and saliency-metric names (at least one of each);
    unknown names raise ``ValueError`` listing the available ones.

    Example:
        >>> check_saliency_names(["gradcam", "gradcam"], "insertion")
        (['gradcam'], ['insertion'])
    """
    return check_names(EXPLAINERS, SALIENCY_METRICS, methods, metrics)


def metrics_needing(metrics: Sequence[str], name: str) -> list[str]:
    """The saliency metrics among ``metrics`` that declare the input ``name`` (e.g. ``"boxes"``).

    Example:
        >>> metrics_needing(["insertion", "pointing_game"], "boxes")
        ['pointing_game']
    """
    return [m for m in metrics if name in SALIENCY_METRICS.get(m).needs]


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
    return explained, target_probability(logits, explained)


class SaliencyEvaluation(_MethodEvaluation):
    r"""Explain batches with several methods and accumulate classifier-saliency metrics.

    One ``MetricCollection`` of :data:`~lico_lightning.metrics.SALIENCY_METRICS` classes per
    method holds every state (sums and counts, reduced across processes by torchmetrics), so
    the value under DDP equals the value over the union of every rank's images. Insertion and
    deletion come from one pass when ``overall`` is asked for. A method that raises during
    :meth:`update` is counted as failed (a failure-count state summed across processes, the
    first error text kept) and skipped; box metrics skip batches without boxes (and, inside a
    batch, images without boxes) — skipped, not failed.

    Args:
        methods: explainer names (:func:`~lico_lightning.explain.list_explainers`).
        metrics: metric names (:func:`~lico_lightning.metrics.list_saliency_metrics`).
        options: protocol knobs (:class:`~lico_lightning.metrics.SaliencyMetricOptions`).
        on_error: ``"skip"`` (count a failing method and go on; monitors) or ``"raise"``
            (re-raise the method's error; :func:`evaluate_saliency`).

    Example:
        >>> from lico_lightning.explain import GradCAM
        >>> g = torch.Generator().manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...     nn.Flatten(), nn.Linear(4, 3))
        >>> ev = SaliencyEvaluation(["gradcam"], ["insertion", "pointing_game"])
        >>> images, labels = torch.randn(2, 3, 16, 16, generator=g), torch.tensor([0, 1])
        >>> maps = ev.update(net, images, labels, {"gradcam": GradCAM(net, "0")},
        ...     boxes=[torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.zeros(0, 4)])
        >>> maps["gradcam"].shape
        torch.Size([2, 16, 16])
        >>> sorted(ev.compute())
        ['gradcam/insertion', 'gradcam/pointing_game']
    """

    def __init__(
        self,
        methods: Sequence[str],
        metrics: Sequence[str],
        options: SaliencyMetricOptions | None = None,
        *,
        on_error: Literal["skip", "raise"] = "skip",
    ) -> None:
        self.on_error = check_choice("on_error", on_error, ["skip", "raise"])
        self.methods, self.metrics = check_saliency_names(methods, metrics)
        self.inputs = SALIENCY_INPUTS
        if options is not None and not isinstance(options, SaliencyMetricOptions):
            raise TypeError(
                f"Expected `options` to be a SaliencyMetricOptions, but got {type(options).__name__}."
            )
        self.options = options or SaliencyMetricOptions()
        self.collections = {m: self._collection() for m in self.methods}
        # {method: {output: (B,)}} per-image values of the latest update (the metrics that
        # keep them: insertion / deletion AUCs, pointing games), for overlay labels
        self.last_scores: dict[str, dict[str, Tensor]] = {}
        # the explained classes (B,) of the latest update and, when the model ran to choose
        # them (target="predicted"), their clean softmax probability (B,); else None
        self.last_target: Tensor | None = None
        self.last_target_probability: Tensor | None = None
        self._init_failures()

    def _collection(self) -> MetricCollection:
        """One metric object per needed class: a class whose ``outputs`` cover several asked
        names (``overall`` gives insertion and deletion too) is built once."""
        covered: set[str] = set()
        members: dict[str, Metric | MetricCollection] = {}  # what MetricCollection takes
        ranked = sorted(self.metrics, key=lambda n: -len(SALIENCY_METRICS.get(n).outputs))
        for name in ranked:
            if name in covered:
                continue
            # NaN marks "no valid sample" (e.g. no box anywhere); compute() leaves it out
            members[name] = SALIENCY_METRICS.get(name).from_options(self.options, float("nan"))
            covered.update(SALIENCY_METRICS.get(name).outputs)
        return MetricCollection(members, compute_groups=False)

    def update(
        self,
        model: nn.Module,
        images: Tensor,
        labels: Tensor,
        explainers: Mapping[str, Explainer],
        boxes: Sequence[Tensor] | None = None,
        target: Literal["predicted", "label"] = "predicted",
    ) -> dict[str, Tensor]:
        """Explain one batch with every method and update that method's metrics.

        The explained class (``target``: the model's top-1 prediction, or the label) is chosen
        once per batch, and the clean probability of that forward pass is reused by the
        confidence metrics of every method. An error there propagates (call :meth:`fail_all`).

        Args:
            model: the classifier (run in eval mode, its flags restored).
            images: ``(B, C, H, W)``.
            labels: ``(B,)`` long.
            explainers: ``{method: explainer}`` for at least every method of this evaluation.
            boxes: ``B`` tensors ``(K_i, 4)`` (``K_i`` may be 0) or ``None``.
            target: ``"predicted"`` (protocol) or ``"label"``.

        Returns:
            ``{method: saliency (B, H, W)}`` for the methods that succeeded.
        """
        check_choice("target", target, ["predicted", "label"])
        missing = [m for m in self.methods if m not in explainers]
        if missing:
            raise ValueError(
                f"Expected an explainer for every method {self.methods}, but got none for {missing}."
            )
        explained, clean_probability = explained_target(model, images, labels, target)
        self.last_target, self.last_target_probability = explained, clean_probability
        batch: dict[str, Any] = {
            "model": model,
            "images": images,
            "target": explained,
            "clean_probability": clean_probability,
        }
        if boxes is not None:  # absent: the metrics that need boxes skip this batch
            batch["boxes"] = list(boxes)
        maps: dict[str, Tensor] = {}
        self.last_scores = {}
        for method in self.methods:
            try:
                saliency = explainers[method].attribute(images, explained)
                values = self._update_metrics(method, Inputs({**batch, "saliency": saliency}))
                scores: dict[str, Tensor] = {}
                for per_sample in values.values():
                    scores.update(per_sample)
                maps[method] = saliency
                self.last_scores[method] = scores
            except Exception as err:  # fault isolation: count it, go on with the next method
                if self.on_error == "raise":
                    raise
                self._fail(method, err)
        return maps


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
    (pointing games over images with boxes), through :class:`SaliencyEvaluation`. Compare a
    baseline and a LICO checkpoint by calling it on both. Unlike the monitor, an explainer
    error is raised here.

    .. math::
        \text{Overall} = \text{Ins} - \text{Del}

    Args:
        model: classifier returning logits (e.g. a ``LICOClassifier`` or its backbone).
        dataloader: batches ``(image, target[, index | boxes])`` or mappings (see
            :func:`parse_batch`).
        methods: explainer names (:func:`~lico_lightning.explain.list_explainers`).
        metrics: metric names (:func:`~lico_lightning.metrics.list_saliency_metrics`).
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
    method_names, metric_names = check_saliency_names(methods, metrics)
    check_choice("target", target, ["predicted", "label"])
    if max_batches is not None:
        check_positive("max_batches", max_batches)
    evaluation = SaliencyEvaluation(method_names, metric_names, options, on_error="raise")
    explainers = build_explainers(model, method_names, layer, explainer_kwargs)
    if device is None:
        device = module_device(model, torch.device("cpu"))
    evaluation.to(device)
    needs_boxes = metrics_needing(metric_names, "boxes")
    for index, batch in enumerate(tqdm(dataloader, desc="saliency", disable=not progress)):
        if max_batches is not None and index >= max_batches:
            break
        images, labels, boxes = parse_batch(batch)
        if needs_boxes and boxes is None:
            raise ValueError(
                f"Expected batches with `boxes` (a list of (K_i, 4) tensors per image) for "
                f"{needs_boxes}, but got batch {index} without."
            )
        images, labels = images.to(device), labels.to(device)
        evaluation.update(model, images, labels, explainers, boxes, target)
    results = evaluation.compute()
    keys = [f"{m}/{k}" for m in method_names for k in metric_names]
    empty = [key for key in keys if key not in results]
    if empty:
        warnings.warn(
            f"evaluate_saliency: no valid image for {empty} (e.g. no image had a box); "
            "reporting NaN for them.",
            stacklevel=2,
        )
    return {key: results.get(key, float("nan")) for key in keys}
