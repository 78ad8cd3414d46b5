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
from typing_extensions import Self, override

from lico_lightning._safety import module_device, preserve_model_state
from lico_lightning._validation import check_bool, check_choice, check_logits, check_positive
from lico_lightning.evaluation._base import (
    Inputs,
    _compute_quietly,
    _MethodEvaluation,
    check_names,
)
from lico_lightning.explain import EXPLAINERS, Explainer, build_explainers
from lico_lightning.functional import intervention_effect, target_probability
from lico_lightning.metrics import (
    SALIENCY_INPUTS,
    SALIENCY_METRICS,
    ClassConfidence,
    GroupAccuracy,
    InterventionEffect,
    SaliencyMetricOptions,
)

__all__ = [
    "GROUND_TRUTH_INPUTS",
    "MODEL_METRICS",
    "SaliencyEvaluation",
    "check_saliency_names",
    "evaluate_saliency",
    "metrics_needing",
    "missing_ground_truth",
    "parse_batch",
    "parse_ground_truth",
]

#: The metric inputs read from a batch's ground-truth dict (``data.ShortcutDataModule`` items)
#: and the entry each comes from: the masks as they are; ``object_effects`` ``(B, O)`` is
#: computed from ``counterfactuals`` ``(B, O, C, H, W)`` (the scene re-rendered without each
#: object: ``ShortcutDataset(..., with_counterfactuals=True)``, or rendered by the
#: ``SaliencyMonitor`` at its probe draw) — ``O`` extra forwards per image, run only when a
#: metric needs it.
GROUND_TRUTH_INPUTS: dict[str, str] = {
    "target_mask": "target_mask",
    "cue_mask": "cue_mask",
    "object_masks": "object_masks",
    "object_effects": "counterfactuals",
}

#: Model-level measures (no explainer) an evaluation can log beside the saliency metrics, and
#: the ground-truth entries each needs: ``target_reliance`` / ``cue_reliance`` (the drop of
#: the label's logit when the scene is re-rendered without the target / the cue:
#: ``counterfactuals[:, 0]`` / ``[:, 1]``; with the clean image, 3 forwards per image) and
#: ``group_accuracy`` (accuracy per group ``2 * label + cue_agrees``, their mean and the worst
#: group's, logged as ``group_accuracy/worst``, ``/mean`` and ``/group_{g}``); and, on any data,
#: ``confidence`` (the clean softmax probability of the explained class, :class:`ClassConfidence`:
#: the quantity every perturbation AUC is an area of — read insertion and deletion beside it).
MODEL_METRICS: dict[str, tuple[str, ...]] = {
    "target_reliance": ("counterfactuals",),
    "cue_reliance": ("counterfactuals",),
    "group_accuracy": ("group",),
    "confidence": (),
}


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


def parse_ground_truth(batch: Any) -> dict[str, Tensor] | None:
    """The ground-truth dict of a batch, or ``None``: the last mapping of a tuple batch
    (``(image, target[, index], ground_truth)``, as ``data.ShortcutDataModule`` yields) or the
    ``ground_truth`` entry of a mapping batch. Its entries are ``(B, ...)`` tensors (see
    :data:`GROUND_TRUTH_INPUTS` and :data:`MODEL_METRICS` for the ones the metrics read).

    Example:
        >>> gt = {"target_mask": torch.zeros(2, 4, 4, dtype=torch.bool)}
        >>> sorted(parse_ground_truth((torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), gt)))
        ['target_mask']
        >>> parse_ground_truth((torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]))) is None
        True
    """
    found: Any = None
    if isinstance(batch, Mapping):
        found = batch.get("ground_truth")
    elif isinstance(batch, (tuple, list)):
        found = next((e for e in reversed(batch[2:]) if isinstance(e, Mapping)), None)
    if found is None:
        return None
    if not isinstance(found, Mapping) or not all(isinstance(v, Tensor) for v in found.values()):
        raise TypeError(
            "Expected the batch's ground truth to be a mapping of (B, ...) tensors, but got "
            f"{type(found).__name__}."
        )
    return dict(found)


def missing_ground_truth(
    metrics: Sequence[str],
    model_metrics: Sequence[str],
    ground_truth: Mapping[str, Tensor] | None,
) -> dict[str, list[str]]:
    """``{metric: [ground-truth entries it needs that ground_truth lacks]}`` for the saliency
    metrics and model metrics that cannot run on a batch (those needing nothing absent are left
    out).

    Example:
        >>> missing_ground_truth(["insertion", "shortcut_share"], ["cue_reliance"], None)
        {'shortcut_share': ['cue_mask'], 'cue_reliance': ['counterfactuals']}
    """
    have = ground_truth or {}
    wanted = {
        name: [
            GROUND_TRUTH_INPUTS[n]
            for n in SALIENCY_METRICS.get(name).needs
            if n in GROUND_TRUTH_INPUTS
        ]
        for name in metrics
    }
    wanted.update({name: list(MODEL_METRICS[name]) for name in model_metrics})
    missing = {name: [k for k in keys if k not in have] for name, keys in wanted.items()}
    return {name: keys for name, keys in missing.items() if keys}


def check_model_metrics(model_metrics: Sequence[str]) -> list[str]:
    """Checked, de-duplicated model-metric names (see :data:`MODEL_METRICS`)."""
    if isinstance(model_metrics, str):
        model_metrics = [model_metrics]
    unknown = [n for n in model_metrics if n not in MODEL_METRICS]
    if unknown:
        raise ValueError(
            f"Expected `model_metrics` among {sorted(MODEL_METRICS)}, but got {unknown}."
        )
    return list(dict.fromkeys(model_metrics))


def _logits(model: nn.Module, images: Tensor, chunk_size: int | None = None) -> Tensor:
    """``(B, C)`` logits in eval mode, no gradient, the model's flags restored (in chunks of
    ``chunk_size`` images; ``None``: one forward)."""
    with preserve_model_state(model), torch.no_grad():
        if chunk_size is None:
            logits = model(images)
        else:
            logits = torch.cat([model(chunk) for chunk in images.split(chunk_size)])
    return check_logits(logits, images.shape[0])


class _Forwards:
    """The model's logits on one batch's clean images and counterfactuals, each run at most
    once (shared by every method and the model metrics)."""

    def __init__(
        self, model: nn.Module, images: Tensor, ground_truth: Mapping[str, Tensor], chunk: int
    ) -> None:
        self.model, self.images, self.ground_truth, self.chunk = model, images, ground_truth, chunk
        self._clean: Tensor | None = None
        self._counterfactual: Tensor | None = None

    def clean(self) -> Tensor:
        if self._clean is None:
            self._clean = _logits(self.model, self.images)
        return self._clean

    def counterfactual(self, count: int) -> Tensor:
        """``(B, count, C)`` logits of the first ``count`` counterfactuals (all when larger)."""
        cf = self.ground_truth["counterfactuals"]
        if (
            cf.ndim != 5
            or cf.shape[0] != self.images.shape[0]
            or cf.shape[2:] != self.images.shape[1:]
        ):
            raise ValueError(
                f"Expected `counterfactuals` of shape ({self.images.shape[0]}, O, "
                f"{', '.join(map(str, self.images.shape[1:]))}), but got {tuple(cf.shape)}."
            )
        count = min(count, cf.shape[1])
        if self._counterfactual is None or self._counterfactual.shape[1] < count:
            done = 0 if self._counterfactual is None else self._counterfactual.shape[1]
            new = cf[:, done:count].to(self.images.device)
            logits = _logits(self.model, new.flatten(0, 1), self.chunk).view(*new.shape[:2], -1)
            parts = [logits] if self._counterfactual is None else [self._counterfactual, logits]
            self._counterfactual = torch.cat(parts, 1)
        return self._counterfactual[:, :count]


class SaliencyEvaluation(_MethodEvaluation):
    r"""Explain batches with several methods and accumulate classifier-saliency metrics.

    One ``MetricCollection`` of :data:`~lico_lightning.metrics.SALIENCY_METRICS` classes per
    method holds every state (sums and counts, reduced across processes by torchmetrics), so
    the value under DDP equals the value over the union of every rank's images. Insertion and
    deletion come from one pass when ``overall`` is asked for. A method that raises during
    :meth:`update` is counted as failed (a failure-count state summed across processes, the
    first error text kept) and skipped; box metrics skip batches without boxes (and, inside a
    batch, images without boxes) — skipped, not failed.

    **Ground truth.** A batch's ground-truth dict (:func:`parse_ground_truth`;
    ``data.ShortcutDataModule`` items) offers the metrics ``target_mask``, ``cue_mask``,
    ``object_masks`` and ``object_effects`` (:data:`GROUND_TRUTH_INPUTS`), and its
    ``target_box`` serves as the ``boxes`` of the pointing games when the batch has no boxes.
    ``model_metrics`` (:data:`MODEL_METRICS`: ``target_reliance``, ``cue_reliance``,
    ``group_accuracy``, ``confidence``) are measured once per batch, not per method, and reported without a
    method prefix. Cost per image: one clean forward (shared with ``target="predicted"``'s),
    plus 2 counterfactual forwards for the reliances, or ``O`` (every object) when
    ``intervention_correctness`` is asked for; each runs once per batch, whatever the number of
    methods.

    Args:
        methods: explainer names (:func:`~lico_lightning.explain.list_explainers`).
        metrics: metric names (:func:`~lico_lightning.metrics.list_saliency_metrics`).
        options: protocol knobs (:class:`~lico_lightning.metrics.SaliencyMetricOptions`).
        on_error: ``"skip"`` (count a failing method and go on; monitors) or ``"raise"``
            (re-raise the method's error; :func:`evaluate_saliency`).
        model_metrics: names among :data:`MODEL_METRICS`.
        num_groups: groups of ``group_accuracy`` (default: ``2 x`` the classes of the
            model's logits, the shortcut benchmark's ``2 * label + cue_agrees``).
        standard_errors: also report ``"{method}/{metric}_se"`` (and ``"{model metric}_se"``
            for the reliances): the standard error of the mean over the images,
            ``std(ddof=1) / sqrt(n)``, for every metric that is a mean of per-image values
            (not the combined ``deletion`` / ``overall`` of ``overall``'s one pass, nor a
            median).

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
        model_metrics: Sequence[str] = (),
        num_groups: int | None = None,
        standard_errors: bool = False,
    ) -> None:
        self.on_error = check_choice("on_error", on_error, ["skip", "raise"])
        self.with_standard_errors = check_bool("standard_errors", standard_errors)
        self.methods, self.metrics = check_saliency_names(methods, metrics)
        self.model_metrics = check_model_metrics(model_metrics)
        if num_groups is not None:
            check_positive("num_groups", num_groups)
        self.num_groups = num_groups
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
        # the model-level measures (one per evaluation, not per method); group accuracy is
        # built at the first batch when num_groups is left to the logits
        self._model_collection: dict[str, Metric] = {
            name: ClassConfidence() if name == "confidence" else InterventionEffect()
            for name in self.model_metrics
            if name != "group_accuracy"
        }
        if "group_accuracy" in self.model_metrics and num_groups is not None:
            self._model_collection["group_accuracy"] = GroupAccuracy(num_groups)
        self._device: torch.device | str | None = None
        # counterfactuals of every object only when a metric needs the per-object effects
        self._every_object = any("object_effects" in n for n in self._needs.values())

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
        ground_truth: Mapping[str, Tensor] | None = None,
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
            ground_truth: the batch's ground-truth dict (:func:`parse_ground_truth`) or
                ``None``; metrics needing an entry it lacks are skipped.

        Returns:
            ``{method: saliency (B, H, W)}`` for the methods that succeeded.
        """
        check_choice("target", target, ["predicted", "label"])
        missing = [m for m in self.methods if m not in explainers]
        if missing:
            raise ValueError(
                f"Expected an explainer for every method {self.methods}, but got none for {missing}."
            )
        gt = {k: v.to(images.device) for k, v in (ground_truth or {}).items()}
        forwards = _Forwards(model, images, gt, self.options.chunk_size)
        if target == "label":
            explained, clean_probability = labels.long(), None
        else:
            logits = forwards.clean()
            explained = logits.argmax(1)
            clean_probability = target_probability(logits, explained)
        self.last_target, self.last_target_probability = explained, clean_probability
        batch: dict[str, Any] = {
            "model": model,
            "images": images,
            "target": explained,
            "clean_probability": clean_probability,
        }
        if boxes is None and "target_box" in gt:  # the pointing games score the target's box
            boxes = list(gt["target_box"].view(-1, 1, 4))
        if boxes is not None:  # absent: the metrics that need boxes skip this batch
            batch["boxes"] = list(boxes)
        batch.update({k: gt[k] for k in ("target_mask", "cue_mask", "object_masks") if k in gt})
        lazy: dict[str, Any] = {}
        count = 2  # counterfactual forwards per image: target and cue, or every object
        if "counterfactuals" in gt:
            count = gt["counterfactuals"].shape[1] if self._every_object else 2
            lazy["object_effects"] = lambda: intervention_effect(
                forwards.clean(), forwards.counterfactual(count), explained, reduction="none"
            )
        self._update_model_metrics(forwards, labels, gt, count, explained)
        maps: dict[str, Tensor] = {}
        self.last_scores = {}
        for method in self.methods:
            try:
                saliency = explainers[method].attribute(images, explained)
                values = self._update_metrics(
                    method, Inputs({**batch, "saliency": saliency}, dict(lazy))
                )
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

    def _update_model_metrics(
        self,
        forwards: _Forwards,
        labels: Tensor,
        gt: Mapping[str, Tensor],
        count: int,
        explained: Tensor,
    ) -> None:
        """Update the model metrics whose ground truth this batch has (the others skip it)."""
        for name in self.model_metrics:
            if any(k not in gt for k in MODEL_METRICS[name]):
                continue
            if name == "confidence":
                self._model_collection[name].update(forwards.clean(), explained)
            elif name == "group_accuracy":
                logits = forwards.clean()
                if name not in self._model_collection:
                    self._model_collection[name] = GroupAccuracy(2 * logits.shape[1])
                    if self._device is not None:
                        self._model_collection[name].to(self._device)
                self._model_collection[name].update(logits, labels.long(), gt["group"].long())
            else:
                cf = forwards.counterfactual(count)
                if cf.shape[1] < 2:
                    raise ValueError(
                        f"Expected counterfactuals without the target and without the cue "
                        f"(objects 0 and 1) for {name!r}, but got {cf.shape[1]} object(s)."
                    )
                index = 0 if name == "target_reliance" else 1
                self._model_collection[name].update(forwards.clean(), cf[:, index], labels.long())

    @override
    def to(self, device: torch.device | str) -> Self:
        super().to(device)
        self._device = device
        for metric in self._model_collection.values():
            metric.to(device)
        return self

    @override
    def compute(self) -> dict[str, float]:
        """``{"{method}/{metric}": value}`` (see the base class) and, for the model metrics,
        ``{"target_reliance": ..., "cue_reliance": ..., "group_accuracy/worst": ...,
        "group_accuracy/mean": ..., "group_accuracy/group_{g}": ...}`` (NaN values left out).
        Under DDP every rank must call it, having seen at least one batch when
        ``group_accuracy`` takes its group count from the logits."""
        results = super().compute()
        for name in self.model_metrics:
            metric = self._model_collection.get(name)
            if metric is None:
                continue
            value = _compute_quietly(metric)
            if isinstance(value, dict):
                flat = {
                    f"{name}/worst": value["worst"],
                    f"{name}/mean": value["mean"],
                    **{f"{name}/group_{g}": v for g, v in enumerate(value["per_group"])},
                }
            else:
                flat = {name: value}
                standard_errors = getattr(metric, "standard_errors", None)  # as the base's
                if self.with_standard_errors and callable(standard_errors):
                    flat[f"{name}_se"] = standard_errors()["value"]
            results.update({k: float(v) for k, v in flat.items() if float(v) == float(v)})
        return results

    @override
    def reset(self) -> None:
        super().reset()
        for metric in self._model_collection.values():
            metric.reset()


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
    model_metrics: Sequence[str] = (),
    standard_errors: bool = False,
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
        model_metrics: model-level measures (:data:`MODEL_METRICS`: ``target_reliance``,
            ``cue_reliance``, ``group_accuracy``, ``confidence``), reported without a method
            prefix.
        standard_errors: also report ``"{key}_se"`` beside each value that is a mean over the
            images: its standard error ``std(ddof=1) / sqrt(N)``.

    Returns:
        ``{"{method}/{metric}": value}`` (NaN, with a warning, for a metric no image was
        valid for, e.g. pointing games without any box) and the model metrics' keys (each
        followed by its ``_se`` with ``standard_errors=True``).

    Raises:
        ValueError: a batch lacks the boxes or the ground-truth entries (:func:`parse_ground_truth`)
            a requested metric needs; the message names each metric and what it needs.

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
    model_names = check_model_metrics(model_metrics)
    evaluation = SaliencyEvaluation(
        method_names,
        metric_names,
        options,
        on_error="raise",
        model_metrics=model_names,
        standard_errors=check_bool("standard_errors", standard_errors),
    )
    explainers = build_explainers(model, method_names, layer, explainer_kwargs)
    if device is None:
        device = module_device(model, torch.device("cpu"))
    evaluation.to(device)
    needs_boxes = metrics_needing(metric_names, "boxes")
    for index, batch in enumerate(tqdm(dataloader, desc="saliency", disable=not progress)):
        if max_batches is not None and index >= max_batches:
            break
        images, labels, boxes = parse_batch(batch)
        ground_truth = parse_ground_truth(batch)
        if needs_boxes and boxes is None and "target_box" not in (ground_truth or {}):
            raise ValueError(
                f"Expected batches with `boxes` (a list of (K_i, 4) tensors per image) for "
                f"{needs_boxes}, but got batch {index} without."
            )
        missing = missing_ground_truth(metric_names, model_names, ground_truth)
        if missing:
            needs = "; ".join(f"{m!r} needs {keys}" for m, keys in missing.items())
            raise ValueError(
                f"Expected batches with a ground-truth dict (ShortcutDataModule items; "
                f"`counterfactuals` from ShortcutDataset(..., with_counterfactuals=True)): "
                f"{needs}, but got batch {index} without."
            )
        images, labels = images.to(device), labels.to(device)
        evaluation.update(model, images, labels, explainers, boxes, target, ground_truth)
    results = evaluation.compute()
    keys = [f"{m}/{k}" for m in method_names for k in metric_names]
    keys += [k for k in results if k.split("/")[0] in model_names]
    empty = [key for key in keys if key not in results]
    if empty:
        warnings.warn(
            f"evaluate_saliency: no valid image for {empty} (e.g. no image had a box); "
            "reporting NaN for them.",
            stacklevel=2,
        )
    out: dict[str, float] = {}
    for key in keys:
        out[key] = results.get(key, float("nan"))
        if f"{key}_se" in results:
            out[f"{key}_se"] = results[f"{key}_se"]
    return out
