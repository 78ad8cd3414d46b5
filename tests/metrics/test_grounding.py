"""Grounding metric classes == naive loops over all samples; DDP: tests/metrics/test_metric_table.py."""

from __future__ import annotations

import math

import pytest
import torch

from lico_lightning.metrics import (
    ConditionalDeletionAUC,
    ConditionalInsertionAUC,
    EnergyPointingGame,
    PairConfidenceDrop,
    PairConfidenceIncrease,
    PointingGame,
)


def _data(n: int = 11, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sal = torch.randn(n, 4, 4, generator=g)
    xy = torch.rand(n, 2, generator=g) * 20
    boxes = torch.cat([xy, xy + 12], 1)
    curves = torch.rand(n, 5, generator=g)
    original, distilled = torch.rand(n, generator=g), torch.rand(n, generator=g)
    return sal, boxes, curves, original, distilled


def _reference(sal, boxes, curves, original, distilled):
    """Plain Python over samples: box cells by centre, argmax, energies, trapezoids."""
    hits, energies, aucs = [], [], []
    for b in range(sal.shape[0]):
        x1, y1, x2, y2 = boxes[b].tolist()
        flat = sal[b].flatten().tolist()
        inside = [
            x1 <= (j + 0.5) * 8 <= x2 and y1 <= (i + 0.5) * 8 <= y2
            for i in range(4)
            for j in range(4)
        ]
        hits.append(float(inside[flat.index(max(flat))]))
        pos = [max(v, 0.0) for v in flat]
        energies.append(sum(p for p, m in zip(pos, inside) if m) / sum(pos) if sum(pos) else 0.0)
        c = curves[b].tolist()
        aucs.append(sum((c[j] + c[j + 1]) / 2 for j in range(4)) / 4)
    o, s = original.tolist(), distilled.tolist()
    energies.sort()
    return {
        "pga": sum(hits) / len(hits),
        "mpge": energies[(len(energies) - 1) // 2],
        "pge": sum(energies) / len(energies),
        "insertion": sum(aucs) / len(aucs),
        "deletion": sum(aucs) / len(aucs),
        "drop": sum(max(0.0, a - b) for a, b in zip(o, s)) / len(o),
        "increase": sum(a < b for a, b in zip(o, s)) / len(o),
    }


def _metrics():
    return {
        "pga": PointingGame(tolerance=0.0, image_size=(32, 32)),
        "mpge": EnergyPointingGame(image_size=(32, 32), reduction="median"),
        "pge": EnergyPointingGame(image_size=(32, 32), reduction="mean"),
        "insertion": ConditionalInsertionAUC(),
        "deletion": ConditionalDeletionAUC(),
        "drop": PairConfidenceDrop(),
        "increase": PairConfidenceIncrease(),
    }


def _update(metrics, sal, boxes, curves, original, distilled, chunk: int = 3):
    for start in range(0, sal.shape[0], chunk):
        rows = slice(start, start + chunk)
        metrics["pga"].update(sal[rows], boxes[rows])
        metrics["mpge"].update(sal[rows], boxes[rows])
        metrics["pge"].update(sal[rows], boxes[rows])
        metrics["insertion"].update(curves[rows])
        metrics["deletion"].update(curves[rows])
        metrics["drop"].update(original[rows], distilled[rows])
        metrics["increase"].update(original[rows], distilled[rows])


def test_classes_match_reference_over_batches() -> None:
    data = _data()
    metrics = _metrics()
    _update(metrics, *data)
    ref = _reference(*data)
    for key, metric in metrics.items():
        assert float(metric.compute()) == pytest.approx(ref[key], abs=1e-6), key
    assert PointingGame.higher_is_better and not ConditionalDeletionAUC.higher_is_better
    assert ConditionalInsertionAUC.higher_is_better and not PairConfidenceDrop.higher_is_better


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_reset_and_errors() -> None:
    metric = EnergyPointingGame(reduction="median", zero_division=None)
    with pytest.raises(ValueError, match="at least one update"):
        metric.compute()
    with pytest.raises(ValueError, match="at least one update"):
        PairConfidenceDrop().compute()
    sal, boxes, *_ = _data()
    metric = PointingGame(tolerance=0.0, image_size=(32, 32))
    metric.update(sal, boxes)
    metric.reset()
    metric.update(sal[:2], boxes[:2])
    assert int(metric.count) == 2
    with pytest.raises(ValueError, match="reduction"):
        EnergyPointingGame(reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_size"):
        PointingGame(image_size=(32,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inside"):
        PointingGame(image_size=(8, 8)).update(sal, boxes)
    assert not math.isnan(
        float(PointingGame(tolerance=0.0).forward(sal, torch.ones_like(sal).bool()))
    )
