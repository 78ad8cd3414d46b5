r"""Grounding evaluation of dual-encoder explainers: a caption phrase's image map vs its box.

The protocol of the second-order attributions paper (§4.1): for an (image, caption) pair and
a phrase of the caption with an annotated box, the explainer's map of the phrase's token span
onto the image is scored with the pointing game (PGA: the most attributed patch lies in the
box; PGE: the share of the positive attribution inside the box; mPGE: its median), optionally
against the box of *another* object of the scene as well (``*_distractor``: grounding that is
real rises on the own box and falls on the distractor's, while maps that just find bright
objects rise on both), and the whole-caption image map with conditional image deletion /
insertion (CID / CII: the score while patches are removed / inserted in attribution order).

:class:`GroundingEvaluation` accumulates these through :mod:`lico_lightning.metrics` classes
(one ``MetricCollection`` per method, states reduced across processes, a failure count per
method), with the machinery of :class:`~lico_lightning.evaluation.SaliencyEvaluation`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import MetricCollection

from lico_lightning._validation import (
    check_bool,
    check_choice,
    check_int,
    check_int_pair,
    check_tensor,
)
from lico_lightning.evaluation._base import Inputs, _MethodEvaluation, check_names
from lico_lightning.evaluation.perturbation import conditional_perturbation_curves
from lico_lightning.explain import PAIR_EXPLAINERS, DualEncoder, PairExplainer, check_token_spans
from lico_lightning.metrics import GROUNDING_INPUTS, GROUNDING_METRICS

__all__ = [
    "GroundingEvaluation",
    "check_grounding_names",
    "phrase_maps",
]


def phrase_maps(
    explainer: PairExplainer,
    images: Tensor,
    tokens: Tensor,
    spans: Tensor,
    phrase_tokens: Tensor | None = None,
) -> tuple[Tensor, Any]:
    """The image map ``(B, Hp, Wp)`` of each caption's phrase, and the caption's attribution.

    A method whose result has a span view (:meth:`PairAttribution.span_map`) projects the
    phrase's token span of the caption onto the image. A method without one (M2IB explains the
    whole other input) explains the phrase as its own caption (``phrase_tokens``) and its
    :meth:`~PairAttribution.image_map` is the phrase map, as in the M2IB paper.

    Args:
        explainer: a pair explainer.
        images: ``(B, C, H, W)`` normalised images.
        tokens: ``(B, S)`` caption tokens.
        spans: ``(B, 2)`` long token spans ``(start, end)`` of the phrases in the captions.
        phrase_tokens: ``(B, S)`` tokens of the phrases alone (for methods without span view).

    Returns:
        ``(maps, attribution)``: the phrase maps and the caption's :class:`PairAttribution`.

    Example:
        >>> from lico_lightning.explain import create_pair_explainer
        >>> from lico_lightning.testing import tiny_dual_encoder
        >>> enc = tiny_dual_encoder()
        >>> tokens = enc.tokenize(["a red circle left of a blue square"])
        >>> maps, _ = phrase_maps(create_pair_explainer("itsm", enc), torch.zeros(1, 3, 32, 32),
        ...     tokens, torch.tensor([[2, 4]]))
        >>> maps.shape
        torch.Size([1, 4, 4])
    """
    attribution = explainer.attribute(images, tokens)
    if "span_map" in attribution.views:
        return attribution.span_map(spans), attribution
    if phrase_tokens is None:
        raise ValueError(
            f"Expected `phrase_tokens` for {attribution.method}, which has no span view, but "
            "got None."
        )
    return explainer.attribute(images, phrase_tokens).image_map(), attribution


def check_grounding_names(
    methods: Sequence[str], metrics: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Checked, de-duplicated method and metric names (at least one of each); unknown names
    raise ``ValueError`` listing the available ones.

    Example:
        >>> check_grounding_names(["itsm", "gradcam"], ["pga"])
        Traceback (most recent call last):
        ...
        ValueError: Expected a pair explainer name, but got 'gradcam'. Available: fixlip, integrated_jacobians, interaction_cam, itsm, m2ib.
    """
    return check_names(PAIR_EXPLAINERS, GROUNDING_METRICS, methods, metrics)


class GroundingEvaluation(_MethodEvaluation):
    r"""Explain (image, caption, phrase, box) probes with several pair explainers and accumulate
    grounding metrics (PGA, PGE, mPGE vs the box and vs a distractor box; CID, CII).

    One ``MetricCollection`` of :mod:`lico_lightning.metrics` classes per method holds every
    state (PGA = :class:`~lico_lightning.metrics.PointingGame` with ``tolerance=0``, PGE / mPGE
    = :class:`~lico_lightning.metrics.EnergyPointingGame` mean / median, CID / CII =
    :class:`~lico_lightning.metrics.ConditionalDeletionAUC` / ``ConditionalInsertionAUC``), so
    values under DDP equal those over the union of every rank's probes. A method that raises is
    counted as failed (summed across processes) and left out of :meth:`compute` with one
    warning, as in :class:`~lico_lightning.evaluation.SaliencyEvaluation`. Distractor metrics skip
    probes without a distractor box (a metric no probe had is left out).

    .. math::
        \mathrm{PGA} = \frac{1}{N}\sum_n [\operatorname{argmax}_{ij} e_{n,ij} \in \mathrm{box}_n],
        \qquad \mathrm{PGE}_n = \frac{\sum_{ij \in \mathrm{box}_n} e^+_{n,ij}}{\sum_{ij} e^+_{n,ij}}

    Args:
        methods: pair explainer names (:func:`~lico_lightning.explain.list_pair_explainers`).
        metrics: metric names (:func:`list_grounding_metrics`).
        image_size: ``(H, W)`` of the probe images (what the boxes refer to); ``None``: the
            size of the images of the first :meth:`update`.
        perturbation_steps: steps of the CID / CII curves.
        on_error: ``"skip"`` (count a failing method, go on) or ``"raise"``.
        standard_errors: also report ``"{method}/{metric}_se"``, the standard error of each
            mean over the probes (``std(ddof=1) / sqrt(n)``; not for the median ``mpge``).

    Example:
        >>> from lico_lightning.explain import create_pair_explainer
        >>> from lico_lightning.testing import tiny_dual_encoder
        >>> enc = tiny_dual_encoder()
        >>> ev = GroundingEvaluation(["itsm"], ["pga", "pga_distractor"], image_size=(32, 32))
        >>> tokens = enc.tokenize(["a red circle left of a blue square"] * 2)
        >>> maps = ev.update(enc, {"itsm": create_pair_explainer("itsm", enc)},
        ...     torch.zeros(2, 3, 32, 32), tokens, torch.tensor([[2, 4], [7, 9]]),
        ...     boxes=torch.tensor([[0.0, 0.0, 16.0, 16.0], [16.0, 16.0, 32.0, 32.0]]),
        ...     distractor_boxes=torch.tensor([[16.0, 16.0, 32.0, 32.0], [0.0, 0.0, 0.0, 0.0]]),
        ...     has_distractor=torch.tensor([True, False]))
        >>> maps["itsm"].shape, sorted(ev.compute())
        (torch.Size([2, 4, 4]), ['itsm/pga', 'itsm/pga_distractor'])
    """

    def __init__(
        self,
        methods: Sequence[str],
        metrics: Sequence[str],
        image_size: tuple[int, int] | None = None,
        *,
        perturbation_steps: int = 8,
        on_error: Literal["skip", "raise"] = "skip",
        standard_errors: bool = False,
    ) -> None:
        self.on_error = check_choice("on_error", on_error, ["skip", "raise"])
        self.with_standard_errors = check_bool("standard_errors", standard_errors)
        self.methods, self.metrics = check_grounding_names(methods, metrics)
        self.image_size = None if image_size is None else check_int_pair("image_size", image_size)
        self.perturbation_steps = check_int("perturbation_steps", perturbation_steps, 1)
        self.inputs = GROUNDING_INPUTS
        self.collections = {
            m: MetricCollection(
                {k: GROUNDING_METRICS.get(k)(self.image_size) for k in self.metrics},
                compute_groups=False,
            )
            for m in self.methods
        }
        # {method: {metric: (B,)}} per-probe values of the latest update (the metrics that keep
        # them, e.g. PGA / PGE; NaN for probes a metric skipped), for overlay labels
        self.last_scores: dict[str, dict[str, Tensor]] = {}
        self._init_failures()

    def update(
        self,
        encoder: DualEncoder,
        explainers: Mapping[str, PairExplainer],
        images: Tensor,
        tokens: Tensor,
        spans: Tensor,
        boxes: Tensor,
        distractor_boxes: Tensor | None = None,
        has_distractor: Tensor | None = None,
        phrase_tokens: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Explain one batch of probes with every method and update that method's metrics.

        Args:
            encoder: the dual encoder the explainers explain.
            explainers: ``{method: explainer}`` for at least every method.
            images: ``(B, C, H, W)`` normalised images of size ``image_size``.
            tokens: ``(B, S)`` caption tokens.
            spans: ``(B, 2)`` long token spans of the phrases (checked against each caption).
            boxes: ``(B, 4)`` ``(x1, y1, x2, y2)`` pixel boxes of the phrases.
            distractor_boxes: ``(B, 4)`` boxes of another object (rows with
                ``has_distractor`` False are ignored).
            has_distractor: ``(B,)`` bool, which probes have a distractor box.
            phrase_tokens: ``(B, S)`` tokens of the phrases alone (methods without span view).

        Returns:
            ``{method: phrase maps (B, Hp, Wp)}`` for the methods that succeeded.
        """
        missing = [m for m in self.methods if m not in explainers]
        if missing:
            raise ValueError(
                f"Expected an explainer for every method {self.methods}, but got none for {missing}."
            )
        b = images.shape[0]
        size = (int(images.shape[-2]), int(images.shape[-1]))
        if self.image_size is None:  # the pointing games' boxes refer to these images
            self.image_size = size
            for collection in self.collections.values():
                for metric in collection.values():
                    if hasattr(metric, "image_size"):
                        metric.image_size = size
        elif size != self.image_size:
            raise ValueError(f"Expected images of size {self.image_size}, but got {size}.")
        spans = check_token_spans(spans, encoder.eot_positions(tokens))
        boxes = check_tensor("boxes", boxes, ndim=2)
        if tuple(boxes.shape) != (b, 4):
            raise ValueError(f"Expected `boxes` of shape ({b}, 4), but got {tuple(boxes.shape)}.")
        if has_distractor is None or distractor_boxes is None:
            has_distractor = torch.zeros(b, dtype=torch.bool, device=images.device)
        rows = has_distractor.nonzero().flatten()
        maps: dict[str, Tensor] = {}
        self.last_scores = {}
        for method in self.methods:
            try:
                phrase_map, attribution = phrase_maps(
                    explainers[method], images, tokens, spans, phrase_tokens
                )
                inputs = self._inputs(
                    encoder, images, tokens, phrase_map, attribution, boxes, distractor_boxes, rows
                )
                values = self._update_metrics(method, inputs)
                self.last_scores[method] = {
                    name: _per_probe(value, rows, b, name in self._row_subset)
                    for name, per_sample in values.items()
                    if len(per_sample) == 1
                    for value in per_sample.values()
                }
                maps[method] = phrase_map
            except Exception as err:  # fault isolation: count it, go on with the next method
                if self.on_error == "raise":
                    raise
                self._fail(method, err)
        return maps

    @property
    def _row_subset(self) -> set[str]:
        """Metrics scored on the probes with a distractor box only."""
        return {k for k, needs in self._needs.items() if set(needs) & _DISTRACTOR_INPUTS}

    def _inputs(
        self,
        encoder: DualEncoder,
        images: Tensor,
        tokens: Tensor,
        phrase_map: Tensor,
        attribution: Any,
        boxes: Tensor,
        distractor_boxes: Tensor | None,
        rows: Tensor,
    ) -> Inputs:
        """The inputs of :data:`~lico_lightning.metrics.GROUNDING_INPUTS` for one method; the
        curves run the encoder, so they are computed only when a metric needs them."""
        values: dict[str, Any] = {"saliency": phrase_map, "boxes": boxes}
        if rows.numel() > 0 and distractor_boxes is not None:
            values["distractor_saliency"] = phrase_map[rows]
            values["distractor_boxes"] = distractor_boxes[rows]

        def curves(mode: Literal["deletion", "insertion"]) -> Callable[[], Tensor]:
            return lambda: conditional_perturbation_curves(
                encoder,
                images,
                tokens,
                attribution.image_map(),
                "image",
                mode,
                num_steps=self.perturbation_steps,
            )

        lazy = {"deletion_curves": curves("deletion"), "insertion_curves": curves("insertion")}
        return Inputs(values, lazy)


#: Inputs that hold only the probes with a distractor box.
_DISTRACTOR_INPUTS = frozenset({"distractor_saliency", "distractor_boxes"})


def _per_probe(value: Tensor, rows: Tensor, batch: int, row_subset: bool) -> Tensor:
    """Per-sample ``value`` laid out over the ``batch`` probes (NaN where it was not scored)."""
    if not row_subset:
        return value
    full = value.new_full((batch, *value.shape[1:]), float("nan"))
    full[rows] = value
    return full
