"""Saliency evaluation as in LICO §4.3 / Table 1 and Appendix B, for any classifier checkpoint.

:func:`evaluate_saliency` runs chosen explainers over a dataloader and averages chosen metrics
(insertion, deletion, overall = insertion − deletion, average drop, increase in confidence,
pointing game, energy pointing game) through :class:`SaliencyEvaluation`, which the
:class:`~lico_lightning.callbacks.SaliencyMonitor` uses as well: one ``MetricCollection`` of
:mod:`lico_lightning.metrics` classes per method, the only accumulators of these metrics.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from tqdm.auto import tqdm
from typing_extensions import Self

from lico_lightning._safety import module_device, preserve_model_state
from lico_lightning._validation import check_choice, check_logits, check_positive
from lico_lightning.explain.base import Explainer, build_explainers, list_explainers
from lico_lightning.functional import (
    target_probability,
)
from lico_lightning.metrics.saliency import (
    SALIENCY_METRICS,
    SaliencyMetricOptions,
    list_saliency_metrics,
)

__all__ = [
    "SALIENCY_METRICS",
    "SaliencyEvaluation",
    "SaliencyMetricOptions",
    "evaluate_saliency",
    "list_saliency_metrics",
    "parse_batch",
]

#: Metrics that need bounding boxes (read from the classes' ``needs_boxes``).
BOX_METRICS = frozenset(n for n in SALIENCY_METRICS.names() if SALIENCY_METRICS.get(n).needs_boxes)


def check_metric_names(metrics: Sequence[str]) -> list[str]:
    """Raise ``ValueError`` listing the available names for an unknown metric."""
    if isinstance(metrics, str):
        metrics = [metrics]
    for name in metrics:
        SALIENCY_METRICS.get(name)
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


class _MethodEvaluation:
    """The machinery every evaluation of several explainers shares: one ``MetricCollection`` per
    method (``collections``), a per-method failure count summed across processes, the first
    error text of each method, and a ``compute`` that every rank can call in the same order.

    Subclasses set ``methods``, ``metrics`` (the result keys of each collection),
    ``collections`` and call ``_init_failures()``; their ``update`` explains and calls
    :meth:`_fail` for a method that raised.
    """

    methods: list[str]
    metrics: list[str]
    collections: dict[str, MetricCollection]

    def _init_failures(self) -> None:
        self._failures = _FailureCount(len(self.methods))
        self._errors: dict[str, str] = {}

    def to(self, device: torch.device | str) -> Self:
        """Move every metric state to ``device``; returns ``self``."""
        for collection in self.collections.values():
            collection.to(device)
        self._failures.to(device)
        return self

    def _fail(self, method: str, err: BaseException) -> None:
        self._failures.failed[self.methods.index(method)] += 1
        self._errors.setdefault(method, f"{type(err).__name__}: {err}")

    def fail_all(self, err: BaseException) -> None:
        """Count every method as failed: the batch failed before any method ran."""
        for method in self.methods:
            self._fail(method, err)

    def compute(self) -> dict[str, float]:
        """``{"{method}/{metric}": value}`` over everything accumulated on every process.

        Under DDP every rank must call it: the failure counts are reduced first, so every rank
        leaves out the same methods and reaches the same collectives in the same order. Methods
        that failed on any rank are left out with one rank-zero warning naming each with its
        error; metrics without a valid sample (e.g. no image had a box) are left out.
        """
        failed = _compute_quietly(self._failures).reshape(-1)
        failed_methods = [m for i, m in enumerate(self.methods) if int(failed[i]) > 0]
        if failed_methods:
            errors = _gather_errors(self._errors)
            if _is_rank_zero():
                reasons = "; ".join(
                    f"{m!r} failed {int(failed[self.methods.index(m)])} time(s) "
                    f"({errors.get(m, 'an error on another rank')})"
                    for m in failed_methods
                )
                warnings.warn(
                    f"{type(self).__name__}: {reasons}; left out of the results.", stacklevel=2
                )
        results: dict[str, float] = {}
        for method in self.methods:
            if method in failed_methods:
                continue
            values = _compute_quietly(self.collections[method])
            for metric in self.metrics:
                value = float(values[metric])
                if value == value:  # NaN: no valid sample
                    results[f"{method}/{metric}"] = value
        return results

    def reset(self) -> None:
        """Forget every state (metric sums, failure counts, error texts)."""
        for collection in self.collections.values():
            collection.reset()
        self._failures.reset()
        self._errors = {}


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
        self.methods = check_method_names(methods)
        self.metrics = check_metric_names(metrics)
        if not self.methods or not self.metrics:
            raise ValueError(
                f"Expected at least one method and one metric, but got {self.methods} and "
                f"{self.metrics}."
            )
        if options is not None and not isinstance(options, SaliencyMetricOptions):
            raise TypeError(
                f"Expected `options` to be a SaliencyMetricOptions, but got {type(options).__name__}."
            )
        self.options = options or SaliencyMetricOptions()
        self.collections = {m: self._collection() for m in self.methods}
        # {method: {"insertion"/"deletion": (B,)}} of the latest update, for overlay labels
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
        inputs: dict[str, Any] = {
            "model": model,
            "images": images,
            "target": explained,
            "boxes": None if boxes is None else list(boxes),
            "clean_probability": clean_probability,
        }
        maps: dict[str, Tensor] = {}
        self.last_scores = {}
        for method in self.methods:
            try:
                saliency = explainers[method].attribute(images, explained)
                scores: dict[str, Tensor] = {}
                for metric in self.collections[method].values():
                    if getattr(metric, "needs_boxes", False) and boxes is None:
                        continue  # skipped, not failed
                    params = inspect.signature(metric.update).parameters
                    kwargs = {k: v for k, v in inputs.items() if k in params}
                    metric.update(saliency=saliency, **kwargs)
                    scores.update(getattr(metric, "last_values", {}))
                maps[method] = saliency
                self.last_scores[method] = scores
            except Exception as err:  # fault isolation: count it, go on with the next method
                if self.on_error == "raise":
                    raise
                self._fail(method, err)
        return maps


class _FailureCount(Metric):
    """Per-method failure counts, summed across processes."""

    full_state_update = False
    failed: Tensor

    def __init__(self, num_methods: int) -> None:
        super().__init__()
        self.add_state("failed", torch.zeros(num_methods, dtype=torch.long), dist_reduce_fx="sum")

    def update(self) -> None:  # counts are added in place by SaliencyEvaluation
        pass

    def compute(self) -> Tensor:
        return self.failed.clone()


def _compute_quietly(metric: Metric | MetricCollection) -> Any:
    """``metric.compute()`` without torchmetrics' "compute before update" warning: a rank that
    saw no image (or no failure) still takes part in the state reduction."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*before the ``update`` method.*")
        return metric.compute()


def _is_rank_zero() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _gather_errors(errors: dict[str, str]) -> dict[str, str]:
    """Every rank's first error text per method (a collective under DDP: every rank calls it
    when any method failed anywhere, which every rank knows from the reduced counts)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(errors)
    gathered: list[dict[str, str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, errors)
    merged: dict[str, str] = {}
    for rank_errors in gathered:
        for method, text in (rank_errors or {}).items():
            merged.setdefault(method, text)
    return merged


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
    evaluation = SaliencyEvaluation(method_names, metric_names, options, on_error="raise")
    explainers = build_explainers(model, method_names, layer, explainer_kwargs)
    if device is None:
        device = module_device(model, torch.device("cpu"))
    evaluation.to(device)
    needs_boxes = [n for n in metric_names if SALIENCY_METRICS.get(n).needs_boxes]
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
