"""Metric classes == per-sample loops over the functional math; DDP: tests/metrics/test_metric_table.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lico_lightning.functional import (
    average_drop,
    deletion_auc,
    energy_pointing_game,
    increase_in_confidence,
    insertion_auc,
    pointing_game,
)
from lico_lightning.metrics import (
    AverageDrop,
    DeletionAUC,
    EnergyPointingGame,
    IncreaseInConfidence,
    InsertionAUC,
    InsertionDeletionAUC,
    PointingGame,
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3),
    )


def _data(n: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 8, 8, generator=g)
    sal = torch.rand(n, 8, 8, generator=g)
    target = torch.randint(0, 3, (n,), generator=g)
    boxes = []
    for i in range(n):
        k = i % 3  # 0, 1 or 2 boxes
        xy = torch.rand(k, 2, generator=g) * 6
        boxes.append(torch.cat([xy, xy + 2], 1))
    return images, sal, target, boxes


def _per_sample_reference(model, images, sal, target, boxes):
    """Naive loops: one image at a time through the functional metrics, then plain means."""
    model.eval()
    ins, dele, drop, inc, hits, energy = [], [], [], [], [], []
    for i in range(images.shape[0]):
        x, s, t = images[i : i + 1], sal[i : i + 1], target[i : i + 1]
        ins.append(float(insertion_auc(model, x, s, t, step_fraction=0.1)))
        dele.append(float(deletion_auc(model, x, s, t, step_fraction=0.1, substrate="zero")))
        drop.append(float(average_drop(model, x, s, t)))
        inc.append(float(increase_in_confidence(model, x, s, t)))
        if boxes[i].numel():
            hits.append(float(pointing_game(s, [boxes[i]], tolerance=2.0)))
            energy.append(float(energy_pointing_game(s, [boxes[i]])))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {
        "insertion": mean(ins),
        "deletion": mean(dele),
        "overall": mean(ins) - mean(dele),
        "average_drop": mean(drop),
        "increase": mean(inc),
        "pointing_game": mean(hits),
        "energy": mean(energy),
    }


def _metrics():
    return {
        "both": InsertionDeletionAUC(step_fraction=0.1, deletion_substrate="zero", chunk_size=7),
        "insertion": InsertionAUC(step_fraction=0.1),
        "deletion": DeletionAUC(step_fraction=0.1, substrate="zero"),
        "average_drop": AverageDrop(),
        "increase": IncreaseInConfidence(),
        "pointing_game": PointingGame(tolerance=2.0),
        "energy": EnergyPointingGame(),
    }


def _update(metrics, model, images, sal, target, boxes):
    for name, m in metrics.items():
        if name in ("pointing_game", "energy"):
            m.update(sal, boxes)
        else:
            m.update(model, images, sal, target)


def _results(metrics):
    both = metrics["both"].compute()
    out = {k: float(v) for k, v in both.items()}
    out.update({k: float(m.compute()) for k, m in metrics.items() if k != "both"})
    return out


def test_metric_classes_match_per_sample_loops_across_batches():
    model = _model().train()
    images, sal, target, boxes = _data()
    metrics = _metrics()
    for lo, hi in [(0, 3), (3, 4), (4, 10)]:
        _update(metrics, model, images[lo:hi], sal[lo:hi], target[lo:hi], boxes[lo:hi])
    assert model.training and model[3].training  # eval only during update
    got = _results(metrics)
    ref = _per_sample_reference(model, images, sal, target, boxes)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    assert InsertionAUC.higher_is_better and not DeletionAUC.higher_is_better
    assert not AverageDrop.higher_is_better and PointingGame.higher_is_better


@pytest.mark.parametrize("cls", [PointingGame, EnergyPointingGame])
def test_no_valid_box_returns_zero_division_with_warning(cls):
    metric = cls(zero_division=0.5)
    metric.update(torch.rand(2, 8, 8), [torch.zeros(0, 4), torch.zeros(0, 4)])
    with pytest.warns(UserWarning, match="no valid sample"):
        assert float(metric.compute()) == 0.5
    metric.update(torch.rand(1, 8, 8), [torch.tensor([[0.0, 0.0, 8.0, 8.0]])])  # whole image
    assert float(metric.compute()) == 1.0  # only the image with a box counts


def test_bad_arguments():
    with pytest.raises(ValueError, match="step_fraction"):
        InsertionDeletionAUC(step_fraction=1.5)
    with pytest.raises(ValueError, match="substrate"):
        DeletionAUC(substrate="mean")
    with pytest.raises(ValueError, match="tolerance"):
        PointingGame(tolerance=-1)
    with pytest.raises(ValueError, match="Expected boxes"):
        PointingGame().update(torch.rand(1, 8, 8), [torch.tensor([[0.0, 0.0, 9.0, 1.0]])])
