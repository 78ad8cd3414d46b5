"""``GroundingMonitor``: watch a dual encoder's phrase grounding evolve while it trains.

On a fixed probe set of (image, caption, phrase, box[, distractor box]) items it explains each
caption with chosen pair explainers (InteractionCAM, integrated Jacobians, ITSM, M2IB, FIxLIP or
any registered one), scores the phrase's image map against its box (PGA, PGE, mPGE; the same
against the distractor's box; conditional image deletion / insertion), logs
``grounding/{method}/{metric}`` and labelled overlay images. Schedule, probes, hosts (Trainer,
Fabric, plain loop), logging and the no-perturbation guarantees are the
:class:`~lico_lightning.callbacks.ExplanationMonitor`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import override

from lico_lightning import _open_clip as open_clip_helpers
from lico_lightning._safety import preserve_model_state
from lico_lightning._validation import check_bool, check_finite, check_int, check_tensor
from lico_lightning.callbacks.hosts import MonitorHost
from lico_lightning.callbacks.monitor import ExplanationMonitor, Stage
from lico_lightning.callbacks.probes import ProbeSet
from lico_lightning.evaluation import GroundingEvaluation, check_grounding_names
from lico_lightning.explain import (
    DualEncoder,
    PairExplainer,
    as_dual_encoder,
    check_token_spans,
    create_pair_explainer,
)
from lico_lightning.functional import box_to_mask, upsample_saliency

__all__ = ["DEFAULT_EXPLAINER_KWARGS", "GroundingMonitor", "GroundingProbes"]

#: Cheap per-method settings of the monitor (merged under the user's ``explainer_kwargs``):
#: integrated Jacobians with 4 steps instead of the paper's 50, M2IB with 4 Adam steps and 4
#: noise copies on the second-to-last block, FIxLIP with 8192 cross-modal coalitions.
DEFAULT_EXPLAINER_KWARGS: dict[str, dict[str, Any]] = {
    "integrated_jacobians": {"n_steps": 4},
    "m2ib": {"layer": -2, "steps": 4, "num_copies": 4},
    "fixlip": {"budget": 8192, "interactions": "cross"},
}


@dataclasses.dataclass
class GroundingProbes(ProbeSet):
    """A grounding probe set: ``N`` (image, caption, phrase, box[, distractor box]) items.

    Checked on construction (before any explanation): the phrase occurs in its caption, the
    boxes are finite, non-empty and inside the images, spans are ``(N, 2)`` integers. Spans are
    checked against the tokenised captions when the model is known.

    Attributes:
        images: ``(N, C, H, W)`` normalised images.
        captions: ``N`` captions.
        phrases: ``N`` phrases, each a substring of its caption.
        boxes: ``(N, 4)`` ``(x1, y1, x2, y2)`` pixel boxes of the phrases.
        spans: ``(N, 2)`` long token spans ``(start, end)`` of the phrases in the tokenised
            captions (SOT = 0, end exclusive), or ``None`` (found by the model's tokenizer).
        distractor_boxes: ``(N, 4)`` boxes of another object of each scene (rows without one
            are ignored), or ``None``.
        has_distractor: ``(N,)`` bool, which probes have a distractor box, or ``None``.

    Example:
        >>> probes = GroundingProbes(torch.zeros(1, 3, 32, 32), ["a red dog"], ["red dog"],
        ...     torch.tensor([[0.0, 0.0, 8.0, 8.0]]))
        >>> len(probes), probes.has_distractor.tolist()
        (1, [False])
        >>> GroundingProbes(torch.zeros(1, 3, 32, 32), ["a red dog"], ["cat"],
        ...     torch.tensor([[0.0, 0.0, 8.0, 8.0]]))
        Traceback (most recent call last):
        ...
        ValueError: Expected probe 0's phrase to occur in its caption, but got 'cat' and 'a red dog'.
    """

    images: Tensor
    captions: list[str]
    phrases: list[str]
    boxes: Tensor
    spans: Tensor | None = None
    distractor_boxes: Tensor | None = None
    has_distractor: Tensor | None = None

    def __post_init__(self) -> None:
        images = check_tensor("probe images", self.images, ndim=4, floating=True)
        check_finite("probe images", images)
        n, (height, width) = images.shape[0], images.shape[-2:]
        for name in ("captions", "phrases"):
            values = getattr(self, name)
            if not isinstance(values, (list, tuple)) or len(values) != n:
                raise ValueError(
                    f"Expected {n} probe {name}, but got "
                    f"{len(values) if isinstance(values, (list, tuple)) else type(values).__name__}."
                )
            if not all(isinstance(v, str) and v.strip() for v in values):
                raise TypeError(f"Expected every probe {name[:-1]} to be a non-empty str.")
            setattr(self, name, list(values))
        for i, (caption, phrase) in enumerate(zip(self.captions, self.phrases)):
            if phrase not in caption:
                raise ValueError(
                    f"Expected probe {i}'s phrase to occur in its caption, but got {phrase!r} "
                    f"and {caption!r}."
                )
        self.boxes = _check_boxes("probe boxes", self.boxes, n, height, width)
        if self.distractor_boxes is not None:
            if self.has_distractor is None:
                self.has_distractor = torch.ones(n, dtype=torch.bool)
            rows = torch.as_tensor(self.has_distractor, dtype=torch.bool)
            boxes = torch.as_tensor(self.distractor_boxes, dtype=torch.float32)
            if tuple(boxes.shape) != (n, 4) or tuple(rows.shape) != (n,):
                raise ValueError(
                    f"Expected distractor boxes of shape ({n}, 4) and `has_distractor` of shape "
                    f"({n},), but got {tuple(boxes.shape)} and {tuple(rows.shape)}."
                )
            if bool(rows.any()):
                _check_boxes("distractor boxes", boxes[rows], int(rows.sum()), height, width)
            self.distractor_boxes, self.has_distractor = boxes, rows
        else:
            self.has_distractor = torch.zeros(n, dtype=torch.bool)
        if self.spans is not None:
            spans = torch.as_tensor(self.spans)
            if spans.is_floating_point() or tuple(spans.shape) != (n, 2):
                raise ValueError(
                    f"Expected integer probe spans of shape ({n}, 2), but got {spans.dtype} "
                    f"{tuple(spans.shape)}."
                )
            self.spans = spans.long()

    @classmethod
    def from_items(cls, items: Sequence[Any]) -> GroundingProbes:
        """From :class:`~lico_lightning.data.GroundingProbe` items (or mappings with the same
        fields: ``image``, ``caption``, ``phrase``, ``box``, optional ``token_span`` and
        ``distractor_box``)."""
        if len(items) == 0:
            raise ValueError("Expected at least one grounding probe, but got none.")

        def get(item: Any, key: str) -> Any:
            return item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)

        for i, item in enumerate(items):
            for key in ("image", "caption", "phrase", "box"):
                if get(item, key) is None:
                    raise ValueError(
                        f"Expected grounding probe {i} to have {key!r} (a GroundingProbe or a "
                        f"mapping with image, caption, phrase, box), but got "
                        f"{type(item).__name__} without it."
                    )
        spans = [get(it, "token_span") for it in items]
        distractors = [get(it, "distractor_box") for it in items]
        has = torch.tensor([d is not None for d in distractors])
        return cls(
            images=torch.stack([torch.as_tensor(get(it, "image")) for it in items]),
            captions=[get(it, "caption") for it in items],
            phrases=[get(it, "phrase") for it in items],
            boxes=torch.stack(
                [torch.as_tensor(get(it, "box"), dtype=torch.float32) for it in items]
            ),
            spans=None if any(s is None for s in spans) else torch.tensor([list(s) for s in spans]),
            distractor_boxes=torch.stack(
                [
                    torch.zeros(4) if d is None else torch.as_tensor(d, dtype=torch.float32)
                    for d in distractors
                ]
            )
            if bool(has.any())
            else None,
            has_distractor=has if bool(has.any()) else None,
        )


def _check_boxes(name: str, boxes: object, n: int, height: int, width: int) -> Tensor:
    boxes = torch.as_tensor(boxes)
    if tuple(boxes.shape) != (n, 4):
        raise ValueError(
            f"Expected {name} of shape ({n}, 4) as (x1, y1, x2, y2), but got {tuple(boxes.shape)}."
        )
    boxes = boxes.float()
    check_finite(name, boxes)
    x1, y1, x2, y2 = boxes.unbind(1)
    bad = (x1 < 0) | (y1 < 0) | (x2 > width) | (y2 > height) | (x1 >= x2) | (y1 >= y2)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"Expected {name} inside the {width}x{height} image with x1 < x2 and y1 < y2, but "
            f"got {boxes[i].tolist()} for probe {i}."
        )
    return boxes


@dataclasses.dataclass
class _Explained:
    """What an overlay shows of one run: the phrase maps of the methods that succeeded and
    their per-probe scores (the evaluation's ``last_scores``, e.g. PGA / PGE)."""

    maps: dict[str, Tensor]
    scores: dict[str, dict[str, Tensor]] = dataclasses.field(default_factory=dict)


class GroundingMonitor(ExplanationMonitor):
    r"""Compute and log how well a dual encoder grounds caption phrases on a fixed probe set.

    A specialisation of :class:`~lico_lightning.callbacks.ExplanationMonitor` (schedule,
    probes, hosts, distributed use, no-perturbation guarantees and fault isolation are
    described there) for image–text dual encoders: the second-order attributions paper's
    grounding protocol (§4.1) as a callback, on a Lightning ``Trainer``, under Fabric or in a
    plain PyTorch loop.

    **Model.** The explained model is an open_clip ``CLIP`` / ``CustomTextCLIP`` or a
    :class:`~lico_lightning.explain.DualEncoder`: the module itself, else ``module.model``
    (e.g. :class:`~lico_lightning.modules.CLIPFineTuner`), else the attribute named by
    ``model_attr`` (dotted, e.g. ``"net.clip"``) — so any LightningModule that holds one works.
    Anything else raises ``TypeError`` at setup (or :meth:`attach`).

    **Probes.** Given (``probes``: :class:`GroundingProbes` or a list of
    :class:`~lico_lightning.data.GroundingProbe`), or ``num_probes`` drawn once (seeded) from
    the validation data (a :class:`~lico_lightning.data.CaptionDataset`: one phrase with its box
    per image: the set of :meth:`~lico_lightning.data.CaptionDataset.draw_probes` with
    ``torch.Generator().manual_seed(seed)``; the drawn ``(pair, phrase)`` keys are in
    :meth:`state_dict`).

    **Maps and metrics.** Each method explains the probe's (image, caption) pair; the phrase's
    token span of the caption is projected onto the image (a method without a span view, M2IB,
    explains the phrase as its own caption instead). The phrase map is scored against the box
    (``pga``, ``pge``, ``mpge``) and against the distractor box (``*_distractor``, probes
    without one skipped); ``cid`` / ``cii`` are conditional image deletion / insertion AUCs of
    the caption's whole image map. On scenes where bright objects attract maps even untrained
    (the generated shapes), compare ``pga`` with ``pga_distractor``: real grounding raises the
    first and lowers the second.

    **Logged values.** ``{prefix}/{method}/{metric}`` — e.g. ``grounding/interaction_cam/pga``,
    monitorable by ``ModelCheckpoint`` / ``EarlyStopping`` — and one overlay figure per run
    (:func:`lico_lightning.viz.render_overlays`): per probe, the image with its caption and
    phrase, per method the phrase map with the phrase's box and its per-probe scores (those the
    evaluation keeps, e.g. PGA / PGE; a metric that skipped the probe shows NaN).

    Args:
        methods: pair explainer names (:func:`~lico_lightning.explain.list_pair_explainers`);
            default: the cheap ones, InteractionCAM and integrated Jacobians with 4 steps.
        metrics: metric names (:func:`~lico_lightning.metrics.list_grounding_metrics`).
        every_n_epochs: run every k epochs (default 1 when neither schedule is given).
        every_n_train_steps: run every k optimizer steps instead.
        num_probes: size of the drawn probe set.
        probes: explicit probes (nothing is drawn).
        seed: seed of the probe draw.
        explainer_kwargs: per-method options over :data:`DEFAULT_EXPLAINER_KWARGS`, e.g.
            ``{"integrated_jacobians": {"n_steps": 16}}``.
        model_attr: explain ``pl_module.<model_attr>`` (dotted): an open_clip model or a
            ``DualEncoder`` (default: the module itself, else its ``model``).
        perturbation_steps: steps of the CID / CII curves.
        batch_size: probes explained per call of an explainer.
        log_images: log overlay figures.
        num_images: at most this many probes in a figure.
        mean: per-channel normalisation mean for display (``None`` → the datamodule's, else
            per-image min-max).
        std: per-channel normalisation std for display.
        prefix: first part of the logged keys.
        standard_errors: also log ``{prefix}/{method}/{metric}_se``: the standard error of
            each mean over the probes, ``std(ddof=1) / sqrt(N)`` (a 0/1 PGA on 16 probes
            carries about 0.12), also written on the overlay figure (default on: a value
            without its error cannot be read; ``False`` logs the means only).

    Example:
        >>> from lico_lightning.testing import tiny_clip
        >>> g = torch.Generator().manual_seed(0)
        >>> probes = GroundingProbes(torch.randn(2, 3, 32, 32, generator=g),
        ...     ["a red circle left of a blue square"] * 2, ["red circle", "blue square"],
        ...     torch.tensor([[0.0, 0.0, 16.0, 16.0], [16.0, 8.0, 32.0, 24.0]]))
        >>> monitor = GroundingMonitor(methods=["interaction_cam"], metrics=["pga", "pge"],
        ...     every_n_train_steps=2, probes=probes, log_images=False)
        >>> monitor.attach(tiny_clip())
        >>> monitor.step(1), sorted(monitor.step(2))  # each mean with its standard error
        ({}, ['grounding/interaction_cam/pga', 'grounding/interaction_cam/pga_se', 'grounding/interaction_cam/pge', 'grounding/interaction_cam/pge_se'])
    """

    def __init__(
        self,
        methods: Sequence[str] = ("interaction_cam", "integrated_jacobians"),
        metrics: Sequence[str] = ("pga", "pge", "mpge", "pga_distractor", "pge_distractor"),
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        num_probes: int = 16,
        probes: GroundingProbes | Sequence[Any] | None = None,
        seed: int = 0,
        explainer_kwargs: dict[str, dict[str, Any]] | None = None,
        model_attr: str | None = None,
        perturbation_steps: int = 8,
        batch_size: int = 16,
        log_images: bool = True,
        num_images: int = 6,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        prefix: str = "grounding",
        standard_errors: bool = True,
    ) -> None:
        self.methods, self.metrics = check_grounding_names(methods, metrics)
        self.standard_errors = check_bool("standard_errors", standard_errors)
        kwargs = {k: dict(v) for k, v in (explainer_kwargs or {}).items()}
        unknown = [k for k in kwargs if k not in self.methods]
        if unknown:
            raise ValueError(
                f"Expected `explainer_kwargs` keys among the methods {self.methods}, but got "
                f"{unknown}."
            )
        check_int("perturbation_steps", perturbation_steps, 1)
        check_int("batch_size", batch_size, 1)
        if probes is not None and not isinstance(probes, GroundingProbes):
            if not isinstance(probes, Sequence):
                raise TypeError(
                    "Expected `probes` to be GroundingProbes or a list of GroundingProbe, but "
                    f"got {type(probes).__name__}."
                )
            probes = GroundingProbes.from_items(list(probes))
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
            evaluate_test=False,  # test batches carry no phrases or boxes
        )
        self.explainer_kwargs = {
            m: {**DEFAULT_EXPLAINER_KWARGS.get(m, {}), **kwargs.get(m, {})} for m in self.methods
        }
        self.perturbation_steps = perturbation_steps
        self.batch_size = batch_size
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        self._encoder: DualEncoder | None = None
        self._explainers: dict[str, PairExplainer] = {}

    @override
    def _state_key_fields(self) -> dict[str, Any]:
        return {"methods": self.methods, **super()._state_key_fields()}

    # ---------------------------------------------------------------- model
    @override
    def _model(self, module: nn.Module) -> nn.Module:
        """The ``nn.Module`` of the dual encoder found in ``module`` (the encoder is kept)."""
        obj = self._model_attr_target(module)
        if self.model_attr is None and not _is_dual_encoder(obj):
            if _is_dual_encoder(getattr(obj, "model", None)):
                obj = obj.model
        if not _is_dual_encoder(obj):
            raise TypeError(
                "Expected an open_clip CLIP / CustomTextCLIP model or a DualEncoder (the module, "
                f"its `model`, or set `model_attr`), but got {type(obj).__name__}."
            )
        if self._encoder is None or (
            self._encoder is not obj and getattr(self._encoder, "module", None) is not obj
        ):
            self._encoder = as_dual_encoder(obj)
            self._explainers = {}
        return self._encoder.module

    def _get_explainers(self, encoder: DualEncoder) -> dict[str, PairExplainer]:
        if not self._explainers:
            self._explainers = {
                m: create_pair_explainer(m, encoder, **self.explainer_kwargs[m])
                for m in self.methods
            }
        return self._explainers

    @override
    def _check_model(self, model: nn.Module) -> None:
        encoder = self._encoder
        assert encoder is not None  # set by `_model`
        self._get_explainers(encoder)  # wrong explainer options fail here, before training
        if self._given is not None:
            given = self._resolved(self._given, encoder)  # spans checked before training
            self._given = self._larger_than_a_patch(given, encoder)

    # ---------------------------------------------------------------- probes
    @override
    def _probes_from_items(self, items: list[Any]) -> GroundingProbes:
        return GroundingProbes.from_items(items)

    @override
    def _probes_from_batch(self, batch: Any) -> GroundingProbes:
        if isinstance(batch, GroundingProbes):
            return batch
        if isinstance(batch, (list, tuple)):
            return GroundingProbes.from_items(list(batch))
        raise TypeError(
            "Expected grounding probes (GroundingProbes or a list of GroundingProbe), but got "
            f"{type(batch).__name__}."
        )

    @override
    def _resolve_probes(self, source: Any) -> ProbeSet:
        probes = super()._resolve_probes(source)
        if probes is self._given or self._encoder is None:
            return probes  # given probes were filtered once, in _check_model
        return self._larger_than_a_patch(probes, self._encoder)

    def _larger_than_a_patch(self, probes: ProbeSet, encoder: DualEncoder) -> GroundingProbes:
        """The probes whose box contains a patch centre, with a warning that counts the others.

        PGA counts a hit when the centre of the most attributed patch lies in the box
        (:func:`~lico_lightning.functional.box_to_mask`), so a box smaller than one patch that
        contains no patch centre scores 0 whatever the map. The second-order attributions
        paper (§4.1, object localisation) keeps only boxes larger than one patch; a box at
        least one patch wide and high always contains a centre, and so do the smaller boxes
        kept here. Towers without a patch grid keep every probe.
        """
        assert isinstance(probes, GroundingProbes)
        grid = encoder.image_spec.grid_size
        if grid is None or len(probes) == 0:
            return probes
        height, width = (int(v) for v in probes.images.shape[-2:])
        cells = box_to_mask(probes.boxes.float().cpu(), grid, (height, width))
        keep = cells.flatten(1).any(1)
        dropped, n = int((~keep).sum()), len(probes)
        if dropped == 0:
            return probes
        patch = (
            f"{width / grid[1]:g} x {height / grid[0]:g} px (a {grid[0]}x{grid[1]} patch grid "
            f"on {width}x{height} px)"
        )
        if dropped == n:
            raise ValueError(
                f"Expected probe boxes that contain a patch centre (patches of {patch}), but "
                f"none of the {n} probes' boxes does (their PGA would always be 0); use larger "
                "objects or images, or a model with smaller patches."
            )
        self._warn(
            f"{dropped} of {n} probes have a box smaller than one patch, {patch}, that contains "
            "no patch centre, and are left out: their PGA would always be 0 (the second-order "
            "attributions paper keeps only boxes larger than a patch)."
        )
        return probes.select(keep.nonzero().flatten().tolist())

    def _resolved(self, probes: ProbeSet, encoder: DualEncoder) -> GroundingProbes:
        """Probes with token spans (found by the tokenizer where missing), checked."""
        assert isinstance(probes, GroundingProbes)
        tokens = encoder.tokenize(probes.captions)
        spans = probes.spans
        if spans is None:
            spans = torch.tensor(
                [encoder.phrase_span(c, p) for c, p in zip(probes.captions, probes.phrases)]
            )
            probes = dataclasses.replace(probes, spans=spans)
        check_token_spans(spans.to(tokens.device), encoder.eot_positions(tokens))
        return probes

    # ---------------------------------------------------------------- explaining
    @override
    def _evaluation(self, stage: Stage) -> GroundingEvaluation:
        return GroundingEvaluation(  # the image size comes with the first probes
            self.methods,
            self.metrics,
            perturbation_steps=self.perturbation_steps,
            on_error="skip",
            standard_errors=self.standard_errors,
        )

    @override
    def _explain(
        self, model: nn.Module, evaluation: Any, probes: ProbeSet, stage: Stage
    ) -> _Explained:
        encoder = self._encoder
        if encoder is None or encoder.module is not model:
            encoder = self._encoder = as_dual_encoder(model)
            self._explainers = {}
        probes = self._resolved(probes, encoder)
        explainers = self._get_explainers(encoder)
        device = probes.images.device
        maps: dict[str, list[Tensor]] = {}
        scores: dict[str, dict[str, list[Tensor]]] = {}
        with preserve_model_state(model):  # explain the model as it evaluates (eval mode)
            for start in range(0, len(probes), self.batch_size):
                part = probes.select(slice(start, start + self.batch_size))
                tokens = encoder.tokenize(part.captions).to(device)
                out = evaluation.update(
                    encoder,
                    explainers,
                    part.images,
                    tokens,
                    part.spans.to(device),  # type: ignore[union-attr]
                    part.boxes,
                    part.distractor_boxes,
                    part.has_distractor,
                    # for methods without a span view (M2IB): the phrase as its own caption
                    phrase_tokens=encoder.tokenize(part.phrases).to(device),
                )
                for method, value in out.items():
                    maps.setdefault(method, []).append(value)
                    for name, per_probe in evaluation.last_scores.get(method, {}).items():
                        scores.setdefault(method, {}).setdefault(name, []).append(per_probe)
        return _Explained(
            {m: torch.cat(v) for m, v in maps.items()},
            {m: {k: torch.cat(v) for k, v in named.items()} for m, named in scores.items()},
        )

    @override
    def _render(self, probes: ProbeSet, explained: Any, host: MonitorHost, step: int) -> Tensor:
        from lico_lightning.viz import render_overlays

        assert isinstance(probes, GroundingProbes) and isinstance(explained, _Explained)
        n = len(probes)
        if not explained.maps:
            raise RuntimeError("no phrase map to show")
        size = (int(probes.images.shape[-2]), int(probes.images.shape[-1]))
        shown: dict[str, Tensor] = {}
        scores: dict[str, dict[str, Tensor]] = {}
        for method, patch_maps in explained.maps.items():
            patch_maps = patch_maps[:n].float()
            # the evaluation's per-probe scores ("PGA", "PGE", ...): those no shown probe has
            # are left out, and so is a repeat (per probe, mPGE is PGE)
            scores[method] = {}
            for name, values in explained.scores.get(method, {}).items():
                values = values[:n]
                if values.shape[0] < n or bool(values.isnan().all()):
                    continue
                if not any(torch.equal(values, v) for v in scores[method].values()):
                    scores[method][name.upper()] = values
            pixels = upsample_saliency(patch_maps, size).clamp(min=0)
            peak = pixels.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
            shown[method] = pixels / peak
        mean, std = self.mean, self.std
        datamodule = getattr(getattr(host, "trainer", None), "datamodule", None)
        if mean is None and datamodule is not None:
            mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        captions = [f"{c}\n→ {p!r}" for c, p in zip(probes.captions, probes.phrases)]
        return render_overlays(
            probes.images,
            shown,
            mean=mean,
            std=std,
            scores=scores,
            boxes=[b[None] for b in probes.boxes],
            row_captions=captions,
            title=f"{self.prefix} · step {step} · phrase maps with the phrase's box",
            note=self._uncertainty_note(),
        )


def _is_dual_encoder(obj: object) -> bool:
    return isinstance(obj, DualEncoder) or open_clip_helpers.is_clip_model(obj)
