"""The ``confidence`` model metric: the clean softmax probability of the explained class, on
data without any ground truth, through ``evaluate_saliency`` and the ``SaliencyMonitor`` —
against softmax computed by hand and numpy's standard error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lico_lightning.callbacks import SaliencyMonitor
from lico_lightning.evaluation import evaluate_saliency


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    )  # fmt: skip


def _data(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 12, 12, generator=g), torch.randint(0, 3, (n,), generator=g)


def _by_hand(net: nn.Module, images: torch.Tensor, explained: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        p = torch.softmax(net(images).double(), 1).gather(1, explained[:, None]).squeeze(1)
    values = p.numpy()
    return float(values.mean()), float(np.std(values, ddof=1) / math.sqrt(len(values)))


@pytest.mark.parametrize("target", ["predicted", "label"])
def test_evaluate_saliency_reports_the_explained_class_confidence(target):
    net, (images, labels) = _net(), _data()
    batches = [(images[:6], labels[:6]), (images[6:], labels[6:])]
    got = evaluate_saliency(
        net, batches, ["gradcam"], ["deletion"], layer="0", target=target, progress=False,
        model_metrics=["confidence"], standard_errors=True,
    )  # fmt: skip
    with torch.no_grad():
        explained = net(images).argmax(1) if target == "predicted" else labels
    mean, se = _by_hand(net, images, explained)
    assert got["confidence"] == pytest.approx(mean, abs=1e-6)
    assert got["confidence_se"] == pytest.approx(se, abs=1e-6)


def test_the_monitor_logs_confidence_beside_the_perturbation_metrics_on_plain_data():
    net, (images, labels) = _net(), _data(6)
    monitor = SaliencyMonitor(
        methods=["gradcam"], metrics=["insertion"], model_metrics=["confidence"],
        every_n_train_steps=1, layer="0", log_images=False,
    )  # fmt: skip
    monitor.attach(net, (images, labels))
    logged = monitor.step(1)
    with torch.no_grad():
        explained = net(images).argmax(1)
    mean, se = _by_hand(net, images, explained)
    assert logged["saliency/confidence"] == pytest.approx(mean, abs=1e-6)
    assert logged["saliency/confidence_se"] == pytest.approx(se, abs=1e-6)
    assert set(logged) == {
        "saliency/gradcam/insertion",
        "saliency/gradcam/insertion_se",
        "saliency/confidence",
        "saliency/confidence_se",
    }
