"""The standard error every mean-of-values metric keeps beside its mean: ``std(ddof=1) /
sqrt(n)`` over every sample, equal to numpy's on the same per-sample values, and under
2-process DDP equal to one process over the union (issue 19 point 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tests._ddp import run_in_gloo_group

from lico_lightning import functional as F
from lico_lightning import metrics as M

N = 9


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    sal = torch.rand(N, 8, 8, generator=g)
    masks = torch.rand(N, 8, 8, generator=g) > 0.6
    logits, cf = torch.randn(N, 3, generator=g), torch.randn(N, 3, generator=g)
    target = torch.randint(0, 3, (N,), generator=g)
    return {"sal": sal, "masks": masks, "logits": logits, "cf": cf, "target": target}


CASES = {
    "energy_pointing_game": (
        M.EnergyPointingGame,
        lambda d, r: (d["sal"][r], d["masks"][r]),
        lambda d: F.energy_pointing_game(d["sal"], d["masks"], reduction="none"),
    ),
    "intervention_effect": (
        M.InterventionEffect,
        lambda d, r: (d["logits"][r], d["cf"][r], d["target"][r]),
        lambda d: F.intervention_effect(d["logits"], d["cf"], d["target"], reduction="none"),
    ),
    "rank_accuracy": (
        M.RelevanceRankAccuracy,
        lambda d, r: (d["sal"][r], d["masks"][r]),
        lambda d: F.relevance_rank_accuracy(d["sal"], d["masks"], reduction="none"),
    ),
}


def _numpy_se(values: torch.Tensor) -> float:
    v = values[~values.isnan()].double().numpy()
    return float(np.std(v, ddof=1) / math.sqrt(len(v)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_standard_error_equals_numpys_over_every_update(name: str) -> None:
    make, args, values = CASES[name]
    data = _data()
    metric = make()
    for rows in (slice(0, 4), slice(4, N)):
        metric.update(*args(data, rows))
    (se,) = metric.standard_errors().values()
    assert float(se) == pytest.approx(_numpy_se(values(data)), rel=1e-6)
    assert float(metric.compute()) == pytest.approx(float(values(data).mean()), abs=1e-6)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))


PAIRED = {  # metrics with two curves and the names of their three outputs
    "insertion_deletion": (
        lambda: M.InsertionDeletionAUC(step_fraction=0.25, blur_kernel_size=3),
        ("insertion", "deletion", "overall"),
    ),
    "road": (lambda: M.ROADAUC(fractions=(0.25, 0.5, 0.75)), ("morf", "lerf", "srg")),
}


@pytest.mark.parametrize("name", sorted(PAIRED))
def test_two_curve_metrics_report_the_error_of_each_curve_and_of_their_difference(
    name: str,
) -> None:
    """Insertion, deletion and overall (ROAD MoRF, LeRF and SRG) each with numpy's standard
    error over the per-image values; the difference's error is not the sum of the two."""
    make, outputs = PAIRED[name]
    g = torch.Generator().manual_seed(5)
    images, sal = torch.randn(N, 1, 8, 8, generator=g), torch.rand(N, 8, 8, generator=g)
    target = torch.randint(0, 3, (N,), generator=g)
    model, metric = _model(), make()
    per_image: dict[str, list[torch.Tensor]] = {k: [] for k in outputs[:2]}
    for rows in (slice(0, 4), slice(4, N)):
        metric.update(model, images[rows], sal[rows], target[rows])
        last = metric.last_values
        for key in outputs[:2]:
            per_image[key].append(last[key])
    first, second = (torch.cat(per_image[k]) for k in outputs[:2])
    difference = first - second
    se = metric.standard_errors()
    assert set(se) == set(outputs)
    for key, values in zip(outputs, (first, second, difference)):
        assert float(se[key]) == pytest.approx(_numpy_se(values), rel=1e-5)
    assert float(se[outputs[2]]) != pytest.approx(float(se[outputs[0]] + se[outputs[1]]))


def test_standard_error_needs_two_samples_and_a_median_keeps_none() -> None:
    metric = M.InterventionEffect()
    metric.update(torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([0]))
    assert math.isnan(float(metric.standard_errors()["value"]))
    assert M.EnergyPointingGame(reduction="median").standard_errors() == {}
    assert set(M.PointingGame().standard_errors()) == {"pointing_game"}


def _ddp_rank(rank: int, world: int) -> list[float]:
    data = _data()
    out = []
    for name in sorted(CASES):
        make, args, _ = CASES[name]
        metric = make()
        metric.update(*args(data, list(range(rank, N, world))))
        out.append(float(next(iter(metric.standard_errors().values()))))
    return out


@pytest.mark.distributed
def test_standard_error_under_two_process_ddp_equals_one_process() -> None:
    data = _data()
    expected = [_numpy_se(CASES[name][2](data)) for name in sorted(CASES)]
    for got in run_in_gloo_group(_ddp_rank):
        assert got == pytest.approx(expected, rel=1e-6)


def test_the_grounding_evaluation_reports_each_means_standard_error() -> None:
    from tests.evaluation.test_metric_needs import _probes

    from lico_lightning.evaluation import GroundingEvaluation, phrase_maps
    from lico_lightning.explain import create_pair_explainer
    from lico_lightning.testing import tiny_dual_encoder

    enc = tiny_dual_encoder()
    probes = _probes()
    tokens = enc.tokenize(probes.captions)
    spans = torch.tensor([enc.phrase_span(c, p) for c, p in zip(probes.captions, probes.phrases)])
    explainer = create_pair_explainer("interaction_cam", enc)
    maps, _ = phrase_maps(explainer, probes.images, tokens, spans)
    ev = GroundingEvaluation(
        ["interaction_cam"], ["pge", "mpge"], tuple(probes.images.shape[-2:]), standard_errors=True
    )
    ev.update(enc, {"interaction_cam": explainer}, probes.images, tokens, spans, probes.boxes)
    results = ev.compute()
    size = tuple(probes.images.shape[-2:])  # the boxes' image; the maps are on the patch grid
    energies = F.energy_pointing_game(maps, probes.boxes, image_size=size, reduction="none")
    assert results["interaction_cam/pge_se"] == pytest.approx(_numpy_se(energies), rel=1e-5)
    assert "interaction_cam/mpge_se" not in results  # a median keeps no standard error
