"""SaliencyEvaluation: the one accumulator behind evaluate_saliency and the monitors.

References: per-image functional values averaged by a plain loop here; DDP runs compared with
the single-process value over the union of the ranks' images.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from lico_lightning.evaluation import SaliencyEvaluation
from lico_lightning.explain import Explainer, GradCAM
from lico_lightning.functional import deletion_auc, insertion_auc, pointing_game


def _net() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net


def _data(n: int = 4) -> tuple[Tensor, Tensor, list[Tensor]]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, 8, 8, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    boxes = [
        torch.tensor([[0.0, 0.0, 4.0, 4.0]]) if i % 2 == 0 else torch.zeros(0, 4) for i in range(n)
    ]
    return images, labels, boxes


class _Broken(Explainer):
    uses_layer = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, None)

    def _attribute(self, images: Tensor, target: Tensor) -> Tensor:
        raise RuntimeError("boom")


def _reference(net: nn.Module, images: Tensor, boxes: list[Tensor]) -> dict[str, float]:
    net.eval()
    target = net(images).argmax(1)
    sal = GradCAM(net, "0").attribute(images, target)
    ins = [
        float(insertion_auc(net, images[i : i + 1], sal[i : i + 1], target[i : i + 1]))
        for i in range(len(images))
    ]
    dele = [
        float(deletion_auc(net, images[i : i + 1], sal[i : i + 1], target[i : i + 1]))
        for i in range(len(images))
    ]
    hits = [
        float(pointing_game(sal[i : i + 1], [boxes[i]]))
        for i in range(len(images))
        if boxes[i].numel()
    ]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {
        "gradcam/insertion": mean(ins),
        "gradcam/deletion": mean(dele),
        "gradcam/overall": mean(ins) - mean(dele),
        "gradcam/pointing_game": mean(hits),
    }


METRICS = ["insertion", "deletion", "overall", "pointing_game"]


def test_values_equal_a_per_image_loop_and_failures_are_left_out_with_one_warning() -> None:
    net = _net()
    images, labels, boxes = _data()
    ev = SaliencyEvaluation(["gradcam", "rise"], METRICS)  # "rise" gets a broken explainer
    explainers = {"gradcam": GradCAM(net, "0"), "rise": _Broken(net)}
    maps = ev.update(net, images[:2], labels[:2], explainers, boxes[:2])
    maps2 = ev.update(net, images[2:], labels[2:], explainers, boxes[2:])
    assert set(maps) == set(maps2) == {"gradcam"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = ev.compute()
    texts = [str(w.message) for w in caught if "SaliencyEvaluation" in str(w.message)]
    assert len(texts) == 1 and "'rise'" in texts[0] and "RuntimeError: boom" in texts[0]
    want = _reference(net, images, boxes)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    ev.reset()
    ev.update(net, images, labels, {"gradcam": GradCAM(net, "0"), "rise": _Broken(net)})
    assert "gradcam/pointing_game" not in ev.compute()  # no boxes: skipped, not failed


def test_fail_all_and_bad_names() -> None:
    ev = SaliencyEvaluation(["gradcam"], ["insertion"])
    ev.fail_all(ValueError("no batch"))
    with pytest.warns(UserWarning, match="no batch"):
        assert ev.compute() == {}
    with pytest.raises(ValueError, match="Available"):
        SaliencyEvaluation(["gradcam"], ["aopc"])
    with pytest.raises(ValueError, match="Available"):
        SaliencyEvaluation(["lime"], ["insertion"])
    with pytest.raises(ValueError, match="explainer for every method"):
        net = _net()
        images, labels, _ = _data()
        ev.update(net, images, labels, {})


def _ddp_rank(rank: int, world: int) -> tuple[dict[str, float], list[str]]:
    net = _net()
    images, labels, boxes = _data()
    ev = SaliencyEvaluation(["gradcam", "rise"], METRICS)
    flaky = _Broken(net) if rank == 1 else GradCAM(net, "0")  # fails on rank 1 only
    sl = slice(rank, None, world)
    ev.update(net, images[sl], labels[sl], {"gradcam": GradCAM(net, "0"), "rise": flaky}, boxes[sl])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ev.compute()
    return out, [str(w.message) for w in caught if "SaliencyEvaluation" in str(w.message)]


def check_ddp_results(
    rank0: tuple[dict[str, float], list[str]], rank1: tuple[dict[str, float], list[str]]
) -> None:
    """Both ranks finish with the same values, equal to one process over all images; the method
    that failed on rank 1 only is left out everywhere, with one warning on rank 0 carrying
    rank 1's error text. Run from the one 2-process spawn in tests/metrics/test_metric_table.py."""
    (r0, w0), (r1, w1) = rank0, rank1
    images, _, boxes = _data()
    want = _reference(_net(), images, boxes)
    assert r0 == r1
    assert set(r0) == set(want)  # "rise" left out on both ranks
    for key, value in want.items():
        assert r0[key] == pytest.approx(value, abs=1e-6), key
    assert len(w0) == 1 and "'rise'" in w0[0] and "boom" in w0[0]  # text from rank 1
    assert w1 == []
