"""``SaliencyMonitor``: watch a classifier's saliency maps and their quality evolve in training.

On a fixed probe set it computes chosen explainers (Grad-CAM, Grad-CAM++, Score-CAM, RISE, or
any registered one) and metrics (insertion / deletion / overall, average drop, increase in
confidence, pointing games), logs them as ``saliency/{method}/{metric}`` and logs labelled
overlay images. Schedule, probes, hosts (Trainer, Fabric, plain loop), logging and the
no-perturbation guarantees are the :class:`~lico_lightning.callbacks.ExplanationMonitor`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from typing_extensions import override

from lico_lightning._validation import check_bool, check_choice
from lico_lightning.callbacks.hosts import MonitorHost
from lico_lightning.callbacks.monitor import ExplanationMonitor, Stage
from lico_lightning.callbacks.probes import ProbeSet
from lico_lightning.evaluation import (
    SaliencyEvaluation,
    check_saliency_names,
    metrics_needing,
    missing_ground_truth,
    parse_batch,
    parse_ground_truth,
)
from lico_lightning.evaluation.saliency import check_model_metrics
from lico_lightning.explain import Explainer, build_explainers, check_explainer_options
from lico_lightning.metrics import SaliencyMetricOptions

__all__ = ["SaliencyMonitor", "SaliencyProbes"]


@dataclasses.dataclass
class SaliencyProbes(ProbeSet):
    """A classifier probe set.

    Attributes:
        images: ``(N, C, H, W)`` images, normalised like the training data.
        labels: ``(N,)`` true classes.
        boxes: ``N`` tensors ``(K_i, 4)`` of ``(x1, y1, x2, y2)`` pixel boxes, or ``None``.
        ground_truth: ``{name: (N, ...) tensor}`` (``data.ShortcutDataModule`` items'
            ground truth, optionally with ``counterfactuals`` ``(N, O, C, H, W)``), or ``None``.
    """

    images: Tensor
    labels: Tensor
    boxes: list[Tensor] | None = None
    ground_truth: dict[str, Tensor] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, Tensor) or self.images.ndim != 4:
            raise ValueError(
                "Expected probe images of shape (N, C, H, W), but got "
                f"{getattr(self.images, 'shape', type(self.images).__name__)}."
            )
        if not isinstance(self.labels, Tensor) or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"Expected probe labels of shape ({self.images.shape[0]},), but got "
                f"{getattr(self.labels, 'shape', type(self.labels).__name__)}."
            )
        if self.boxes is not None and len(self.boxes) != self.images.shape[0]:
            raise ValueError(
                f"Expected {self.images.shape[0]} entries in the probe boxes, but got "
                f"{len(self.boxes)}."
            )
        for name, value in (self.ground_truth or {}).items():
            if not isinstance(value, Tensor) or value.shape[:1] != self.images.shape[:1]:
                raise ValueError(
                    f"Expected the probe ground truth {name!r} to be a tensor of "
                    f"{self.images.shape[0]} rows, but got "
                    f"{getattr(value, 'shape', type(value).__name__)}."
                )


def _collate(items: list[Any]) -> Any:
    """Dataset items → one batch that :func:`~lico_lightning.evaluation.parse_batch`
    reads (same-shape tensors of < 2 dims and the first field stacked, the rest kept as
    per-item lists: boxes ``(K_i, 4)`` stay a list, as in a batch; a ground-truth dict of
    fixed-shape tensors is stacked entry by entry, as the default collate does)."""

    def field(values: list[Any], first: bool) -> Any:
        if all(isinstance(v, Mapping) for v in values):
            return {k: field([v[k] for v in values], True) for k in values[0]}
        if all(isinstance(v, Tensor) for v in values):
            same = all(v.shape == values[0].shape for v in values)
            if same and (first or values[0].ndim < 2):
                return torch.stack(values)
        elif all(isinstance(v, (int, float)) for v in values):
            return torch.tensor(values)
        return list(values)

    if isinstance(items[0], Mapping):
        return {k: field([it[k] for it in items], k in ("image", "images")) for k in items[0]}
    if isinstance(items[0], (tuple, list)):
        return tuple(field([it[j] for it in items], j == 0) for j in range(len(items[0])))
    return items


@dataclasses.dataclass
class _Explained:
    """What an overlay shows of one run: the maps of the methods that succeeded, their
    per-image insertion / deletion AUCs (those the evaluation computed) and, when the explained
    class is the prediction, that class and its probability (the evaluation's forward pass)."""

    maps: dict[str, Tensor]
    scores: dict[str, dict[str, Tensor]] = dataclasses.field(default_factory=dict)
    predicted: Tensor | None = None
    confidence: Tensor | None = None


class SaliencyMonitor(ExplanationMonitor):
    r"""Compute and log a classifier's saliency maps and their quality on a fixed probe set.

    A specialisation of :class:`~lico_lightning.callbacks.ExplanationMonitor` (schedule,
    probes, hosts, distributed use, no-perturbation guarantees and fault isolation are
    described there): explainers by name from the classifier explainer registry and the
    saliency metrics, on a Lightning ``Trainer``, under Fabric or in a plain PyTorch loop.

    **Logged values.** ``{prefix}/{method}/{metric}`` — e.g. ``saliency/gradcam/overall``
    (LICO's insertion − deletion), monitorable by ``ModelCheckpoint`` / ``EarlyStopping`` —
    and one overlay figure per run (:func:`lico_lightning.viz.render_overlays`): per image,
    ``true → predicted (probability)``, per method its map with the image's insertion /
    deletion (when those metrics are computed; recomputed for the shown images only), boxes
    where the probes have them and a colour bar. Through TensorBoard ``add_image``, loggers
    with ``log_image`` (W&B), otherwise PNG files under ``{log_dir}/{prefix}/``.

    **Test stage.** During ``trainer.test`` (e.g. ``lico-lightning test --config ...
    --ckpt_path ...``) every test batch is explained and the dataset means are logged as
    ``test/{prefix}/{method}/{metric}`` with the protocol step ``test_step_fraction``
    (LICO Table 1: 3.6 %), with a progress bar.

    A method that fails (on any rank) logs nothing for that run, with one warning. Metrics
    that need boxes are skipped (one warning) when the probes have none.

    Args:
        methods: explainer names (``lico_lightning.explain.list_explainers()``).
        metrics: metric names (``lico_lightning.metrics.list_saliency_metrics()``). The
            default leaves out ``insertion``: in the metric-validity study (README, 36 model
            states × 5 explainers) insertion ranked with the model's clean confidence
            (Spearman +0.44) nearly as much as with the explanation's measured correctness
            (+0.56); deletion (+0.46 / −0.17) and overall (+0.58 / +0.21) much less. Add
            ``"insertion"`` for LICO's Table-1 triple, ``model_metrics=["confidence"]`` to
            read it, and ``"srg"`` (ROAD, +0.61 / +0.19; 18 imputations per image) where it is
            affordable;
            ``pointing_game`` / ``energy_pointing_game`` need probe boxes (or a ground-truth
            ``target_box``); ``evidence_share``, ``shortcut_share``, ``rank_accuracy`` and
            ``intervention_correctness`` need the probes' ground truth (a
            ``data.ShortcutDataModule``'s items).
        model_metrics: model-level measures logged once per run, not per method, as
            ``{prefix}/{name}`` (``lico_lightning.evaluation.MODEL_METRICS``:
            ``target_reliance``, ``cue_reliance``, ``group_accuracy`` → ``/worst``, ``/mean``,
            ``/group_{g}``; ``confidence``, on any data: the clean probability of the explained
            class, which insertion and deletion move with). The reliances need the probes
            re-rendered without the target and
            the cue: drawn from a dataset with ``counterfactuals(i)`` (``ShortcutDataset``),
            the monitor renders them once at the draw (every object's when
            ``intervention_correctness`` is asked for). Cost per probe and run: 3 forwards
            (clean, without target, without cue), or ``1 + O`` with
            ``intervention_correctness``.
        every_n_epochs: run every k epochs (default 1 when neither schedule is given).
        every_n_train_steps: run every k optimizer steps instead.
        num_probes: size of the drawn probe set.
        probe_images: ``(N, C, H, W)`` explicit probe images (normalised like the data).
        probe_targets: ``(N,)`` their labels.
        probe_boxes: ``N`` tensors ``(K_i, 4)`` of ``(x1, y1, x2, y2)`` pixel boxes.
        probe_ground_truth: ``{name: (N, ...) tensor}``, the ground truth of ``probe_images``.
        standard_errors: also log ``{prefix}/{method}/{metric}_se`` beside each value that is a
            mean over the probes: its standard error ``std(ddof=1) / sqrt(N)`` over every
            probe of every process (e.g. 16 probes of a 0/1 pointing game: about 0.12), also
            written on the overlay figure (default on: a value without its error cannot be
            read; ``False`` logs the means only).
        seed: seed of the probe draw.
        target: explain the model's ``"predicted"`` class (the evaluation protocol) or the
            ``"label"``.
        layer: target layer (dotted name) for CAM methods; ``None`` → the model's declared
            default, else its last spatial feature map.
        explainer_kwargs: per-method keyword arguments, e.g. ``{"rise": {"num_masks": 500}}``.
        model_attr: explain ``pl_module.<model_attr>`` (dotted) instead of the module; it
            must return logits.
        options: the metrics' protocol knobs during ``fit``
            (:class:`~lico_lightning.metrics.SaliencyMetricOptions`: step, substrates, blur,
            chunk size, pointing tolerance). ``None``: the defaults with ``step_fraction=0.1``
            (11 steps on any image size), which keeps the monitor cheap; the values track the
            paper's 3.6 % protocol closely but are not identical.
        test_step_fraction: the step of the ``trainer.test`` evaluation (LICO: 0.036); the
            other knobs are those of ``options``.
        log_images: log overlay figures.
        num_images: at most this many probe images in a figure.
        mean: per-channel normalisation mean for display (``None`` → the datamodule's
            ``mean`` if any, else per-image min-max).
        std: per-channel normalisation std for display.
        class_names: names shown in the overlays (``None`` → the datamodule's or the
            module's ``class_names`` if any, else class indices).
        prefix: first part of the logged keys.
        evaluate_test: evaluate every test batch during ``trainer.test``.

    Example:
        >>> monitor = SaliencyMonitor(methods=["gradcam"], metrics=["insertion", "deletion", "overall"])
        >>> monitor.state_key
        "SaliencyMonitor{'methods': ['gradcam'], 'every_n_epochs': 1, 'every_n_train_steps': None, 'prefix': 'saliency'}"

        In a plain loop (``model``, ``optimizer``, ``loader`` and ``val_set`` are yours):

        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        ...     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        >>> g = torch.Generator().manual_seed(0)
        >>> probes = (torch.randn(4, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 0]))
        >>> monitor = SaliencyMonitor(methods=["gradcam"], every_n_train_steps=2,
        ...     layer="0", log_images=False)
        >>> monitor.attach(net, probes)
        >>> monitor.step(1), sorted(monitor.step(2))  # each mean with its standard error
        ({}, ['saliency/gradcam/deletion', 'saliency/gradcam/deletion_se', 'saliency/gradcam/overall', 'saliency/gradcam/overall_se'])
    """

    def __init__(
        self,
        methods: Sequence[str] = ("gradcam",),
        metrics: Sequence[str] = ("deletion", "overall"),
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        num_probes: int = 16,
        probe_images: Tensor | None = None,
        probe_targets: Tensor | None = None,
        probe_boxes: Sequence[Tensor] | None = None,
        seed: int = 0,
        target: Literal["predicted", "label"] = "predicted",
        layer: str | None = None,
        explainer_kwargs: dict[str, dict[str, Any]] | None = None,
        model_attr: str | None = None,
        options: SaliencyMetricOptions | None = None,
        test_step_fraction: float = 0.036,
        log_images: bool = True,
        num_images: int = 8,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        class_names: Sequence[str] | None = None,
        prefix: str = "saliency",
        evaluate_test: bool = True,
        model_metrics: Sequence[str] = (),
        probe_ground_truth: Mapping[str, Tensor] | None = None,
        standard_errors: bool = True,
    ) -> None:
        self.methods, self.metrics = check_saliency_names(methods, metrics)
        self.model_metrics = check_model_metrics(model_metrics)
        self.standard_errors = check_bool("standard_errors", standard_errors)
        if options is not None and not isinstance(options, SaliencyMetricOptions):
            raise TypeError(
                f"Expected `options` to be a SaliencyMetricOptions, but got {type(options).__name__}."
            )
        check_choice("target", target, ["predicted", "label"])
        if (probe_images is None) != (probe_targets is None):
            raise ValueError(
                "Expected `probe_images` and `probe_targets` together, but got only one of them."
            )
        if probe_boxes is not None and probe_images is None:
            raise ValueError("Expected `probe_boxes` only together with `probe_images`.")
        if probe_ground_truth is not None and probe_images is None:
            raise ValueError("Expected `probe_ground_truth` only together with `probe_images`.")
        probes = None
        if probe_images is not None:
            if not isinstance(probe_images, Tensor) or probe_images.ndim != 4:
                raise ValueError(
                    "Expected `probe_images` of shape (N, C, H, W), but got "
                    f"{getattr(probe_images, 'shape', type(probe_images).__name__)}."
                )
            if (
                not isinstance(probe_targets, Tensor)
                or probe_targets.shape != probe_images.shape[:1]
            ):
                raise ValueError(
                    f"Expected `probe_targets` of shape ({probe_images.shape[0]},), but got "
                    f"{getattr(probe_targets, 'shape', type(probe_targets).__name__)}."
                )
            if probe_boxes is not None and len(probe_boxes) != probe_images.shape[0]:
                raise ValueError(
                    f"Expected {probe_images.shape[0]} entries in `probe_boxes`, but got "
                    f"{len(probe_boxes)}."
                )
            probes = SaliencyProbes(
                probe_images.detach().cpu(),
                probe_targets.detach().cpu().long(),
                list(probe_boxes) if probe_boxes is not None else None,
                None
                if probe_ground_truth is None
                else {k: v.detach().cpu() for k, v in probe_ground_truth.items()},
            )
        super().__init__(
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            num_probes=num_probes,
            probes=probes,
            seed=seed,
            model_attr=model_attr,
            log_images=log_images,
            num_images=num_images,
            prefix=prefix,
            evaluate_test=evaluate_test,
        )
        self.options = options if options is not None else SaliencyMetricOptions(step_fraction=0.1)
        self.test_options = dataclasses.replace(self.options, step_fraction=test_step_fraction)
        self.target = target
        self.layer = layer
        self.explainer_kwargs = {k: dict(v) for k, v in (explainer_kwargs or {}).items()}
        check_explainer_options(
            self.methods, self.explainer_kwargs
        )  # a typo fails here, not at run 1
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        self.class_names = list(class_names) if class_names is not None else None
        self._explainers: dict[str, Explainer] = {}
        self._explained_model: nn.Module | None = None
        self._warned_boxes = False
        self._warned_ground_truth = False

    @override
    def _state_key_fields(self) -> dict[str, Any]:
        return {"methods": self.methods, **super()._state_key_fields()}

    # ---------------------------------------------------------------- specialisation
    @override
    def _probes_from_items(self, items: list[Any]) -> SaliencyProbes:
        return self._probes_from_batch(_collate(items))

    @override
    def _probes_from_batch(self, batch: Any) -> SaliencyProbes:
        images, labels, boxes = parse_batch(batch)
        ground_truth = parse_ground_truth(batch)
        return SaliencyProbes(images, torch.as_tensor(labels).long(), boxes, ground_truth)

    def _needs_counterfactuals(self) -> bool:
        return bool(
            metrics_needing(self.metrics, "object_effects")
            or {"target_reliance", "cue_reliance"} & set(self.model_metrics)
        )

    @override
    def _draw(self, dataset: Any) -> ProbeSet:
        """The drawn probes; when a metric needs counterfactuals the items lack and the dataset
        renders them (``dataset.counterfactuals(i)``, e.g. ``ShortcutDataset``), rendered here
        once for the drawn items."""
        probes = super()._draw(dataset)
        assert isinstance(probes, SaliencyProbes)
        gt = probes.ground_truth
        if (
            gt is not None
            and "counterfactuals" not in gt
            and self._needs_counterfactuals()
            and callable(getattr(dataset, "counterfactuals", None))
            and self.probe_indices is not None
        ):
            gt["counterfactuals"] = torch.stack(
                [dataset.counterfactuals(int(i)) for i in self.probe_indices]
            )
        return probes

    @override
    def _evaluation(self, stage: Stage) -> SaliencyEvaluation:
        options = self.test_options if stage == "test" else self.options
        return SaliencyEvaluation(
            self.methods,
            self.metrics,
            options,
            on_error="skip",
            model_metrics=self.model_metrics,
            standard_errors=self.standard_errors,
        )

    def _get_explainers(self, model: nn.Module) -> dict[str, Explainer]:
        if self._explained_model is not model:
            self._explainers = build_explainers(
                model, self.methods, self.layer, self.explainer_kwargs
            )
            self._explained_model = model
        return self._explainers

    @override
    def _explain(
        self, model: nn.Module, evaluation: Any, probes: ProbeSet, stage: Stage
    ) -> _Explained:
        assert isinstance(probes, SaliencyProbes)
        gt = probes.ground_truth
        if probes.boxes is None and "target_box" not in (gt or {}) and not self._warned_boxes:
            skipped = sorted(metrics_needing(self.metrics, "boxes"))
            if skipped:
                self._warned_boxes = True
                self._warn(
                    f"{skipped} need boxes, but the images have none; those metrics are skipped."
                )
        missing = missing_ground_truth(self.metrics, self.model_metrics, gt)
        if missing and not self._warned_ground_truth:
            self._warned_ground_truth = True
            needs = "; ".join(f"{m!r} needs {keys}" for m, keys in missing.items())
            self._warn(
                f"the probes lack ground truth ({needs}; probes of a ShortcutDataModule carry "
                "it); those metrics are skipped."
            )
        maps = evaluation.update(
            model,
            probes.images,
            probes.labels,
            self._get_explainers(model),
            boxes=probes.boxes,
            target=self.target,
            ground_truth=gt,
        )
        if evaluation.last_target_probability is None:  # target="label": no forward ran
            return _Explained(maps, evaluation.last_scores)
        return _Explained(
            maps,
            evaluation.last_scores,
            predicted=evaluation.last_target,
            confidence=evaluation.last_target_probability,
        )

    @override
    def _render(self, probes: ProbeSet, explained: Any, host: MonitorHost, step: int) -> Tensor:
        from lico_lightning.viz import render_overlays

        assert isinstance(probes, SaliencyProbes) and isinstance(explained, _Explained)
        model = self._explained_model
        n = len(probes)
        maps = {k: v[:n] for k, v in explained.maps.items()}
        if not maps or model is None:
            raise RuntimeError("no saliency map to show")
        if explained.predicted is not None and explained.confidence is not None:
            predicted, confidence = explained.predicted[:n], explained.confidence[:n]
        else:  # the explained class was the label: the prediction needs its own forward
            with torch.no_grad():
                probability = torch.softmax(model(probes.images).float(), 1)
            confidence, predicted = probability.max(1)
        short = {"insertion": "ins", "deletion": "del"}  # the per-image AUCs of the evaluation
        scores = {
            name: {short[k]: v[:n] for k, v in explained.scores.get(name, {}).items() if k in short}
            for name in maps
        }
        mean, std, names = self.mean, self.std, self.class_names
        sources = [getattr(host, "trainer", None), getattr(host, "pl_module", None)]
        datamodule = getattr(sources[0], "datamodule", None)
        if mean is None and datamodule is not None:
            mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        for source in (datamodule, sources[1]):
            if names is None and source is not None:
                names = getattr(source, "class_names", None)
        return render_overlays(
            probes.images,
            maps,
            mean=mean,
            std=std,
            labels=probes.labels,
            predictions=predicted,
            probabilities=confidence,
            class_names=names,
            scores=scores,
            boxes=probes.boxes,
            title=f"{self.prefix} · step {step}",
            note=self._uncertainty_note(),
        )
