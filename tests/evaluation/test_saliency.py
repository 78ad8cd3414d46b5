"""evaluate_saliency == explainer + per-sample functional metrics averaged by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lico_lightning.evaluation import evaluate_saliency, parse_batch
from lico_lightning.explain import (
    EXPLAINERS,
    Explainer,
    GradCAM,
    build_explainers,
    register_explainer,
)
from lico_lightning.functional import (
    average_drop,
    deletion_auc,
    increase_in_confidence,
    insertion_auc,
    pointing_game,
)
from lico_lightning.metrics import list_saliency_metrics
from lico_lightning.testing import tiny_cnn


def _net() -> nn.Module:
    return tiny_cnn(3)


def _batches():
    g = torch.Generator().manual_seed(0)
    out = []
    for n in (3, 2):
        x = torch.randn(n, 3, 10, 10, generator=g)
        y = torch.randint(0, 3, (n,), generator=g)
        out.append((x, y, torch.arange(n)))  # (image, target, index) like the data modules
    return out


@pytest.mark.parametrize("target", ["predicted", "label"])
def test_matches_hand_average(target):
    net = _net().train()
    batches = _batches()
    res = evaluate_saliency(
        net,
        batches,
        ["gradcam"],
        ["insertion", "deletion", "overall", "average_drop", "increase_in_confidence"],
        layer="3",
        target=target,
        progress=False,
    )
    assert net.training
    ins, dele, drop, inc = [], [], [], []
    explainer = GradCAM(net, "3")
    net.eval()
    for x, y, _ in batches:
        t = net(x).argmax(1) if target == "predicted" else y
        s = explainer.attribute(x, t)
        for i in range(x.shape[0]):
            xi, si, ti = x[i : i + 1], s[i : i + 1], t[i : i + 1]
            ins.append(float(insertion_auc(net, xi, si, ti)))
            dele.append(float(deletion_auc(net, xi, si, ti)))
            drop.append(float(average_drop(net, xi, si, ti)))
            inc.append(float(increase_in_confidence(net, xi, si, ti)))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    assert res["gradcam/insertion"] == pytest.approx(mean(ins), abs=1e-6)
    assert res["gradcam/deletion"] == pytest.approx(mean(dele), abs=1e-6)
    assert res["gradcam/overall"] == pytest.approx(mean(ins) - mean(dele), abs=1e-6)
    assert res["gradcam/average_drop"] == pytest.approx(mean(drop), abs=1e-6)
    assert res["gradcam/increase_in_confidence"] == pytest.approx(mean(inc), abs=1e-6)


def test_pointing_game_from_mapping_batches_skips_images_without_boxes():
    net = _net()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 10, 10, generator=g)
    boxes = [
        torch.tensor([[0.0, 0.0, 5.0, 5.0]]),
        torch.zeros(0, 4),
        torch.tensor([[5.0, 5.0, 10.0, 10.0]]),
    ]
    batch = {"image": x, "label": torch.tensor([0, 1, 2]), "boxes": boxes}
    res = evaluate_saliency(
        net,
        [batch],
        ["gradcam", "rise"],
        ["pointing_game"],
        layer="3",
        target="label",
        explainer_kwargs={"rise": {"num_masks": 16, "grid_size": 3}},
        progress=False,
    )
    s = GradCAM(net, "3").attribute(x, torch.tensor([0, 1, 2]))
    assert res["gradcam/pointing_game"] == pytest.approx(float(pointing_game(s, boxes)))
    assert set(res) == {"gradcam/pointing_game", "rise/pointing_game"}


def test_errors():
    net = _net()
    with pytest.raises(ValueError, match="Available"):
        evaluate_saliency(net, _batches(), ["gradcam"], ["aopc"], progress=False)
    with pytest.raises(ValueError, match="Available"):
        evaluate_saliency(net, _batches(), ["lime"], ["insertion"], progress=False)
    with pytest.raises(ValueError, match="boxes"):
        evaluate_saliency(
            net, _batches(), ["gradcam"], ["pointing_game"], layer="3", progress=False
        )
    with pytest.raises(TypeError, match="Expected a batch"):
        parse_batch(torch.zeros(2, 3, 4, 4))
    assert "overall" in list_saliency_metrics()


def test_shared_layer_goes_only_to_explainers_that_read_one():
    class InputMagnitude(Explainer):  # no `layer` argument at all
        uses_layer = False

        def __init__(self, model: nn.Module) -> None:
            super().__init__(model, None)

        def _attribute(self, images, target):
            return images.abs().sum(1)

    register_explainer("input_magnitude")(InputMagnitude)
    try:
        explainers = build_explainers(_net(), ["gradcam", "input_magnitude", "rise"], layer="3")
        res = evaluate_saliency(
            _net(), _batches(), ["input_magnitude"], ["insertion"], layer="3", progress=False
        )
    finally:
        EXPLAINERS.unregister("input_magnitude")
    assert explainers["gradcam"].layer_name == "3"
    assert isinstance(explainers["input_magnitude"], InputMagnitude)
    assert 0.0 <= float(res["input_magnitude/insertion"]) <= 1.0
