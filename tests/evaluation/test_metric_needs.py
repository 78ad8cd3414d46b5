"""A metric registered with its formula and class only runs in every evaluation and monitor:
the evaluations hand each metric the inputs it declares (``needs``), skip it for a batch that
lacks one, and reject a need they never offer when built."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from lico_lightning import viz
from lico_lightning.callbacks import GroundingMonitor, SaliencyMonitor
from lico_lightning.callbacks.grounding_monitor import GroundingProbes
from lico_lightning.evaluation import GroundingEvaluation, SaliencyEvaluation, phrase_maps
from lico_lightning.explain import GradCAM, create_pair_explainer
from lico_lightning.functional import pointing_game
from lico_lightning.metrics import GROUNDING_METRICS, SALIENCY_METRICS, SaliencyMetric
from lico_lightning.testing import tiny_clip, tiny_dual_encoder


def peak_share(saliency: Tensor) -> Tensor:
    """The toy formula: per map, its maximum over its total (of the absolute values)."""
    flat = saliency.abs().flatten(1)
    return flat.amax(1) / flat.sum(1).clamp(min=1e-12)


class _ToyMean(Metric):
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")
        self.last_values: dict[str, Tensor] = {}

    def _add(self, values: Tensor) -> None:
        self.total += values.double().sum()
        self.count += values.numel()
        self.last_values = {"peak_share": values.detach()}

    def compute(self) -> Tensor:
        return (self.total / self.count).float()


class SaliencyPeakShare(SaliencyMetric, _ToyMean):
    """Toy classifier-saliency metric: needs the maps only."""

    needs = ("saliency",)
    outputs = ("peak_share",)

    def update(self, saliency: Tensor) -> None:
        self._add(peak_share(saliency))


class SaliencyBoxedPeak(SaliencyPeakShare):
    """Toy metric that needs boxes (skipped for batches without)."""

    needs = ("saliency", "boxes")
    outputs = ("boxed_peak",)

    def update(self, saliency: Tensor, boxes: list[Tensor]) -> None:
        self._add(peak_share(saliency))


class GroundingPeakShare(_ToyMean):
    """Toy grounding metric: built with the probes' image size, needs the phrase maps."""

    needs = ("saliency",)

    def __init__(self, image_size: tuple[int, int] | None = None) -> None:
        super().__init__()

    def update(self, saliency: Tensor) -> None:
        self._add(peak_share(saliency))


class GroundingDistractorPeak(GroundingPeakShare):
    needs = ("distractor_saliency", "distractor_boxes")

    def update(self, saliency: Tensor, boxes: Tensor) -> None:
        self._add(peak_share(saliency))


class WrongNeeds(GroundingPeakShare):
    needs = ("caption_embeddings",)


@pytest.fixture
def toy_metrics():
    SALIENCY_METRICS.register("peak_share", SaliencyPeakShare)
    SALIENCY_METRICS.register("boxed_peak", SaliencyBoxedPeak)
    GROUNDING_METRICS.register("peak_share", GroundingPeakShare)
    GROUNDING_METRICS.register("distractor_peak", GroundingDistractorPeak)
    GROUNDING_METRICS.register("wrong_needs", WrongNeeds)
    yield
    for name in ("peak_share", "boxed_peak"):
        SALIENCY_METRICS.unregister(name)
    for name in ("peak_share", "distractor_peak", "wrong_needs"):
        GROUNDING_METRICS.unregister(name)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def test_toy_saliency_metric_runs_in_the_evaluation_and_the_monitor(toy_metrics) -> None:
    net = _net()
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(4, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 0])
    net.eval()
    with torch.no_grad():
        predicted = net(images).argmax(1)
    want = float(peak_share(GradCAM(net, "0").attribute(images, predicted)).mean())

    ev = SaliencyEvaluation(["gradcam"], ["peak_share", "boxed_peak"])
    ev.update(net, images, labels, {"gradcam": GradCAM(net, "0")})  # no boxes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed method would warn
        results = ev.compute()  # boxed_peak: skipped (no boxes), not failed
    assert results == pytest.approx({"gradcam/peak_share": want}, abs=1e-6)
    assert ev.last_scores["gradcam"]["peak_share"].shape == (4,)

    monitor = SaliencyMonitor(
        methods=["gradcam"],
        metrics=["peak_share"],
        every_n_train_steps=1,
        layer="0",
        log_images=False,
    )
    monitor.attach(net, (images, labels))
    logged = monitor.step(1)
    assert logged == pytest.approx({"saliency/gradcam/peak_share": want}, abs=1e-6)


def _probes() -> GroundingProbes:
    g = torch.Generator().manual_seed(0)
    return GroundingProbes(
        torch.randn(2, 3, 32, 32, generator=g),
        ["a red circle left of a blue square"] * 2,
        ["red circle", "blue square"],
        torch.tensor([[0.0, 0.0, 16.0, 16.0], [16.0, 8.0, 32.0, 24.0]]),
    )


def test_toy_grounding_metric_runs_in_the_evaluation_and_the_monitor(
    toy_metrics, tmp_path, monkeypatch
) -> None:
    enc = tiny_dual_encoder()
    probes = _probes()
    tokens = enc.tokenize(probes.captions)
    spans = torch.tensor([enc.phrase_span(c, p) for c, p in zip(probes.captions, probes.phrases)])
    explainer = create_pair_explainer("interaction_cam", enc)
    maps, _ = phrase_maps(explainer, probes.images, tokens, spans)
    want = peak_share(maps)

    ev = GroundingEvaluation(["interaction_cam"], ["peak_share", "distractor_peak", "pga"])
    ev.update(enc, {"interaction_cam": explainer}, probes.images, tokens, spans, probes.boxes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed method would warn
        results = ev.compute()  # no distractor boxes: distractor_peak skipped, not failed
    assert set(results) == {"interaction_cam/peak_share", "interaction_cam/pga"}
    assert results["interaction_cam/peak_share"] == pytest.approx(float(want.mean()), abs=1e-6)
    torch.testing.assert_close(ev.last_scores["interaction_cam"]["peak_share"], want)

    with pytest.raises(ValueError, match="Expected the inputs of metric 'wrong_needs'"):
        GroundingEvaluation(["interaction_cam"], ["wrong_needs"])

    shown: list[dict] = []
    real = viz.render_overlays

    def spy(*args, **kwargs):
        shown.append(kwargs["scores"])
        return real(*args, **kwargs)

    monkeypatch.setattr(viz, "render_overlays", spy)
    monitor = GroundingMonitor(
        methods=["interaction_cam"],
        metrics=["peak_share", "pga"],
        every_n_train_steps=1,
        probes=probes,
        standard_errors=False,
    )
    monitor.attach(tiny_clip(), log_dir=tmp_path)
    logged = monitor.step(1)
    assert logged == pytest.approx(
        {
            "grounding/interaction_cam/peak_share": float(want.mean()),
            "grounding/interaction_cam/pga": float(results["interaction_cam/pga"]),
        },
        abs=1e-6,
    )
    # the overlay labels are the evaluation's per-probe scores, the toy's included
    (scores,) = shown
    torch.testing.assert_close(scores["interaction_cam"]["PEAK_SHARE"], want)
    hits = pointing_game(maps, probes.boxes, tolerance=0.0, image_size=(32, 32), reduction="none")
    torch.testing.assert_close(scores["interaction_cam"]["PGA"], hits)
