"""Ground-truth metrics on the shortcut benchmark: two hand-wired oracle classifiers — one whose
logits read only the target object's shape, one only the cue's colour — told apart by every
ground-truth measure (the issue's "Done means"), with Grad-CAM from the package as explainer.

(class == functional == naive loop and the 2-process DDP check of the four classes are rows of
``tests/metrics/test_metric_table.py``.)
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as TF
from torch.utils.data import default_collate

from lico_lightning import functional as F
from lico_lightning import metrics as M
from lico_lightning.data import CUE_COLOURS, ShortcutDataModule
from lico_lightning.data._shapes import SHAPE_NAMES, SHAPE_SIZES, _mask, _Shape
from lico_lightning.explain import GradCAM

K = 3  # circle, square, triangle
SIZE = 48  # at 32 px a medium circle and square differ by ~3 pixels; at 48 px by >= 4 (margin)
N = 96


# ------------------------------------------------------------------ the two oracles
class _Unnormalise(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean


def _cue_colour_distance(rgb: Tensor) -> Tensor:
    """``(B, K, H, W)`` squared distance of every pixel to each class's cue colour."""
    cue = torch.tensor(CUE_COLOURS[:K]).view(1, K, 3, 1, 1)
    return ((rgb[:, None] - cue) ** 2).sum(2)


class _TemplateMatch(nn.Module):
    """Where does a target shape of class ``c`` sit? One template per (class, size): +1 on the
    pixels every sub-pixel placement of the shape covers, -1 on the pixels of the surrounding
    disc (radius r + 1.5, closer than any other object may come) that no placement covers, 0 on
    the rim in between. Mismatches against the foreground (bright pixels that are not a cue
    colour: the cue is invisible to it) -> ``(B, 2K, H, W)`` = ReLU(margin - mismatches)."""

    def __init__(self, margin: float = 3.0, grid: int = 16) -> None:
        super().__init__()
        r = SHAPE_SIZES["large"] * SIZE
        w = 2 * math.ceil(r + 2) + 1
        offsets = [(j + 0.5) / grid - 0.5 for j in range(grid)]
        kernels = []
        for c in range(K):
            for size in ("medium", "large"):
                rs = SHAPE_SIZES[size] * SIZE
                placed = torch.stack(
                    [
                        _mask(_Shape(SHAPE_NAMES[c], "red", size, w / 2 + dx, w / 2 + dy, rs), w)
                        for dy in offsets
                        for dx in offsets
                    ]
                )
                disc = _mask(_Shape("circle", "red", size, w / 2, w / 2, rs + 1.5), w)
                kernels.append(placed.all(0).float() - (disc & ~placed.any(0)).float())
        self.register_buffer("kernels", torch.stack(kernels)[:, None])
        self.margin = margin

    def forward(self, rgb: Tensor) -> Tensor:
        fg = (rgb.amax(1, keepdim=True) > 0.35) & (
            _cue_colour_distance(rgb).amin(1, keepdim=True) > 0.04
        )
        response = TF.conv2d(fg.float() * 2 - 1, self.kernels, padding=self.kernels.shape[-1] // 2)
        mismatches = (self.kernels.abs().sum((1, 2, 3)).view(1, -1, 1, 1) - response) / 2
        return TF.relu(self.margin - mismatches)


class _Paint(nn.Module):
    """``(B, 2K, H, W)`` match strengths -> ``(B, K, H, W)``: each match paints the interior of
    its template (a transposed convolution), so class ``c``'s map covers the matched shape."""

    def __init__(self, kernels: Tensor) -> None:
        super().__init__()
        self.register_buffer("interior", (kernels > 0).float())

    def forward(self, strength: Tensor) -> Tensor:
        pad = self.interior.shape[-1] // 2
        return TF.conv_transpose2d(strength, self.interior, padding=pad, groups=K)


class TargetOracle(nn.Module):
    """Logits read only the target's shape: the painted template matches, summed."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.unnormalise = _Unnormalise(mean, std)
        self.match = _TemplateMatch()
        self.features = _Paint(self.match.kernels)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(self.match(self.unnormalise(x))).sum((2, 3)) / 10


class _CueColour(nn.Module):
    def forward(self, rgb: Tensor) -> Tensor:
        return TF.relu(1 - _cue_colour_distance(rgb) / 0.04)


class CueOracle(nn.Module):
    """Logits read only the cue: the pixels of each class's cue colour, counted."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.unnormalise = _Unnormalise(mean, std)
        self.features = _CueColour()

    def forward(self, x: Tensor) -> Tensor:
        return self.features(self.unnormalise(x)).sum((2, 3)) / 4


# ------------------------------------------------------------------ measuring
@pytest.fixture(scope="module")
def benchmark() -> dict[str, object]:
    dm = ShortcutDataModule(
        num_classes=K, cue_correlation=0.9, image_size=SIZE, num_train=64, num_test=N
    )
    test, anti = dm.make_dataset("test"), dm.make_dataset("anti")
    images, labels, gt = default_collate([test[i] for i in range(N)])
    anti_images, anti_labels, _ = default_collate([anti[i] for i in range(N)])
    counterfactuals = torch.stack([test.counterfactuals(i) for i in range(N)])  # (N, O, 3, H, W)
    return {
        "dm": dm,
        "images": images,
        "labels": labels,
        "gt": gt,
        "anti": (anti_images, anti_labels),
        "counterfactuals": counterfactuals,
    }


def _measure(model: nn.Module, bench: dict) -> dict[str, float]:
    images, labels, gt = bench["images"], bench["labels"], bench["gt"]
    cf = bench["counterfactuals"]
    with torch.no_grad():
        logits = model(images)
        cf_logits = model(cf.flatten(0, 1)).view(N, cf.shape[1], K)
        anti_images, anti_labels = bench["anti"]
        anti_accuracy = float((model(anti_images).argmax(1) == anti_labels).float().mean())
    predicted = logits.argmax(1)
    saliency = GradCAM(model, "features").attribute(images, predicted)

    def metric(m, *args) -> float:
        m.update(*args)
        return float(m.compute())

    groups = M.GroupAccuracy(num_groups=2 * K)
    groups.update(logits, labels, gt["group"])
    effects = F.intervention_effect(logits, cf_logits, predicted, reduction="none")  # (N, O)
    random_map = torch.rand(saliency.shape, generator=torch.Generator().manual_seed(0))
    return {
        "accuracy": float((predicted == labels).float().mean()),
        "worst_group_accuracy": float(groups.compute()["worst"]),
        "anti_accuracy": anti_accuracy,
        "target_reliance": metric(M.InterventionEffect(), logits, cf_logits[:, 0], labels),
        "cue_reliance": metric(M.InterventionEffect(), logits, cf_logits[:, 1], labels),
        "evidence_share": metric(M.EnergyPointingGame(), saliency, gt["target_mask"]),
        "shortcut_share": metric(M.EnergyPointingGame(), saliency, gt["cue_mask"]),
        "rank_accuracy_target": metric(M.RelevanceRankAccuracy(), saliency, gt["target_mask"]),
        "rank_accuracy_cue": metric(M.RelevanceRankAccuracy(), saliency, gt["cue_mask"]),
        "intervention_correctness": metric(
            M.InterventionCorrectness(), saliency, gt["object_masks"], effects
        ),
        "intervention_correctness_random_map": metric(
            M.InterventionCorrectness(), random_map, gt["object_masks"], effects
        ),
        "intervention_correctness_random_map_sum": metric(
            M.InterventionCorrectness(mass="sum"), random_map, gt["object_masks"], effects
        ),
    }


def test_every_ground_truth_measure_tells_the_target_oracle_from_the_cue_oracle(
    benchmark,
) -> None:
    dm = benchmark["dm"]
    target = _measure(TargetOracle(dm.mean, dm.std), benchmark)
    cue = _measure(CueOracle(dm.mean, dm.std), benchmark)
    print("\ntarget oracle:", {k: round(v, 3) for k, v in target.items()})
    print("cue oracle:   ", {k: round(v, 3) for k, v in cue.items()})

    # model level, no explainer
    assert target["accuracy"] == 1.0 and target["worst_group_accuracy"] == 1.0
    assert target["anti_accuracy"] == 1.0
    assert cue["worst_group_accuracy"] == 0.0 and cue["anti_accuracy"] == 0.0
    assert 0.8 < cue["accuracy"] < 1.0  # it agrees with the label when the cue does (p = 0.9)
    assert target["cue_reliance"] == pytest.approx(0.0, abs=1e-6)  # the cue is invisible to it
    assert target["target_reliance"] > 5.0
    assert cue["cue_reliance"] > 5.0
    assert cue["target_reliance"] == pytest.approx(0.0, abs=1e-6)
    # explanation level (Grad-CAM of the predicted class)
    assert target["evidence_share"] > 0.99 and target["shortcut_share"] == 0.0
    assert cue["shortcut_share"] > 0.99 and cue["evidence_share"] == 0.0
    assert target["rank_accuracy_target"] > 0.5 > cue["rank_accuracy_target"]
    assert cue["rank_accuracy_cue"] > 0.99 and target["rank_accuracy_cue"] < 0.1
    # Grad-CAM is faithful to both models: the objects it weighs are the ones whose removal
    # moves the explained logit — intervention correctness rates the explainer, not the model
    # (a random map scores about 0)
    assert target["intervention_correctness"] > 0.9 and cue["intervention_correctness"] > 0.9
    assert abs(target["intervention_correctness_random_map"]) < 0.3
    assert abs(cue["intervention_correctness_random_map"]) < 0.3
    # FunnyBirds' summed mass lets object size stand in for importance: the large target wins
    # with any map (why the mean per cell is the default)
    assert target["intervention_correctness_random_map_sum"] > 0.5


# ------------------------------------------------------------------ class behaviour
def test_group_accuracy_reports_every_group_and_handles_no_sample() -> None:
    metric = M.GroupAccuracy(num_groups=3)
    metric.update(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([0, 1]))
    metric.update(torch.tensor([[0.1, 0.9]]), torch.tensor([1]), torch.tensor([1]))
    out = metric.compute()
    assert out["per_group"][:2].tolist() == [1.0, 0.5] and out["per_group"][2].isnan()
    assert float(out["worst"]) == 0.5 and float(out["mean"]) == 0.75
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert metric.compute()["worst"].isnan()
    with pytest.raises(ValueError, match="at least one update"), pytest.warns(UserWarning):
        M.GroupAccuracy(num_groups=2, zero_division=None).compute()
    with pytest.raises(ValueError, match="num_groups"):
        M.GroupAccuracy(num_groups=0)


def test_metrics_skip_images_without_a_defined_value() -> None:
    rra = M.RelevanceRankAccuracy(zero_division=None)
    sal = torch.tensor([[[2.0, 1.0], [0.0, 0.0]]]).repeat(2, 1, 1)
    mask = torch.tensor([[[True, False], [False, False]], [[False, False], [False, False]]])
    rra.update(sal, mask)  # the second image has no region: skipped
    assert float(rra.compute()) == 1.0 and int(rra.count) == 1
    ic = M.InterventionCorrectness()
    ic.update(sal[:1], torch.tensor([[[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0]]]),
              torch.tensor([[1.0, 1.0]]))  # fmt: skip
    assert ic.compute().isnan()  # equal effects: no correlation, nothing accumulated
