"""Grounding formulas against naive per-sample loops on hand-made and random cases."""

from __future__ import annotations

import math

import pytest
import torch

from lico_lightning.functional import (
    box_to_mask,
    curve_auc,
    energy_pointing_game,
    pair_confidence_drop,
    pair_confidence_increase,
    perturbation_keep_masks,
    pointing_game,
)


def pointing_game_accuracy(saliency, target, image_size=None, reduction="mean"):
    """PGA: the pointing game with tolerance 0 (one box or mask per map)."""
    return pointing_game(
        saliency, target, tolerance=0.0, image_size=image_size, reduction=reduction
    )


def naive_mask(box, grid, image):
    h, w = grid
    mask = torch.zeros(h, w, dtype=torch.bool)
    for i in range(h):
        for j in range(w):
            cx, cy = (j + 0.5) * image[1] / w, (i + 0.5) * image[0] / h
            mask[i, j] = box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
    return mask


def random_boxes(n, size, gen):
    h, w = size
    x = torch.rand(n, 2, generator=gen) * w
    y = torch.rand(n, 2, generator=gen) * h
    x1, x2 = x.min(1).values, x.max(1).values + 1e-3
    y1, y2 = y.min(1).values, y.max(1).values + 1e-3
    return torch.stack([x1, y1, x2.clamp(max=w), y2.clamp(max=h)], 1)


@pytest.mark.parametrize(
    ("grid", "image"), [((4, 4), (32, 32)), ((7, 5), (28, 40)), ((6, 6), None)]
)
def test_box_to_mask_matches_loop(grid, image) -> None:
    gen = torch.Generator().manual_seed(0)
    size = image or grid
    boxes = random_boxes(8, size, gen)
    got = box_to_mask(boxes, grid, image)
    for b in range(8):
        assert torch.equal(got[b], naive_mask(boxes[b].tolist(), grid, size))


def test_pointing_game_matches_loop() -> None:
    gen = torch.Generator().manual_seed(1)
    sal = torch.randn(16, 7, 7, generator=gen)
    sal[3] = 0.0  # constant map: argmax is the top-left cell
    boxes = random_boxes(16, (224, 224), gen)
    boxes[3] = torch.tensor([0.0, 0.0, 40.0, 40.0])
    hits = pointing_game_accuracy(sal, boxes, image_size=(224, 224), reduction="none")
    energy = energy_pointing_game(sal, boxes, image_size=(224, 224), reduction="none")
    want_hits, want_energy = [], []
    for b in range(16):
        mask = naive_mask(boxes[b].tolist(), (7, 7), (224, 224))
        flat = sal[b].flatten().tolist()
        peak = flat.index(max(flat))
        want_hits.append(float(mask.flatten()[peak]))
        pos = [max(v, 0.0) for v in flat]
        inside = sum(p for p, m in zip(pos, mask.flatten().tolist()) if m)
        want_energy.append(inside / sum(pos) if sum(pos) > 0 else 0.0)
    assert hits.tolist() == want_hits
    assert want_hits[3] == 1.0
    torch.testing.assert_close(energy, torch.tensor(want_energy))
    torch.testing.assert_close(
        pointing_game_accuracy(sal, boxes, (224, 224)), torch.tensor(want_hits).mean()
    )
    torch.testing.assert_close(
        energy_pointing_game(sal, boxes, image_size=(224, 224), reduction="median"),
        torch.tensor(want_energy).median(),
    )
    # a bool mask target gives the same as its boxes
    masks = box_to_mask(boxes, (7, 7), (224, 224))
    torch.testing.assert_close(energy_pointing_game(sal, masks, reduction="none"), energy)


def test_pointing_game_hand_made() -> None:
    sal = torch.tensor([[[0.0, 2.0], [-5.0, 1.0]]])
    box = torch.tensor([[1, 0, 2, 2]])  # the right column
    assert float(pointing_game_accuracy(sal, box)) == 1.0
    assert float(energy_pointing_game(sal, box)) == 1.0
    assert float(energy_pointing_game(-sal.abs(), box)) == 0.0  # no positive attribution
    assert float(pointing_game_accuracy(sal, torch.tensor([[0, 0, 1, 2]]))) == 0.0


def naive_keep(scores, mode, steps, candidates):
    b, t = scores.shape
    out = torch.zeros(b, steps + 1, t, dtype=torch.bool)
    for i in range(b):
        cand = [p for p in range(t) if candidates[i, p]]
        order = sorted(cand, key=lambda p: (-float(scores[i, p]), p))
        n = len(cand)
        for j in range(steps + 1):
            k = math.floor(j * n / steps + 0.5)
            top = set(order[:k])
            for p in range(t):
                if not candidates[i, p]:
                    out[i, j, p] = True
                elif mode == "deletion":
                    out[i, j, p] = p not in top
                else:
                    out[i, j, p] = p in top
    return out


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("steps", [None, 3, 10])
def test_perturbation_keep_masks_match_loop(mode, steps) -> None:
    gen = torch.Generator().manual_seed(2)
    scores = torch.randint(0, 4, (5, 9), generator=gen).float()  # many ties
    candidates = torch.rand(5, 9, generator=gen) > 0.3
    candidates[0] = True
    got = perturbation_keep_masks(scores, mode, steps, candidates)
    want = naive_keep(scores, mode, steps or int(candidates.sum(1).max()), candidates)
    assert torch.equal(got, want)


def test_perturbation_keep_masks_defaults() -> None:
    keep = perturbation_keep_masks(torch.tensor([[0.1, 0.9, 0.5]]), "insertion")
    assert keep.int().tolist() == [[[0, 0, 0], [0, 1, 0], [0, 1, 1], [1, 1, 1]]]


def test_auc_and_confidence_match_loops() -> None:
    gen = torch.Generator().manual_seed(3)
    curves = torch.rand(4, 6, generator=gen)
    want = [sum((c[j] + c[j + 1]) / 2 for j in range(5)) / 5 for c in curves.tolist()]
    torch.testing.assert_close(curve_auc(curves), torch.tensor(want))
    o, s = torch.rand(10, generator=gen), torch.rand(10, generator=gen)
    drop = sum(max(0.0, a - b) for a, b in zip(o.tolist(), s.tolist())) / 10
    inc = sum(a < b for a, b in zip(o.tolist(), s.tolist())) / 10
    torch.testing.assert_close(pair_confidence_drop(o, s), torch.tensor(drop))
    torch.testing.assert_close(pair_confidence_increase(o, s), torch.tensor(inc))
    assert pair_confidence_drop(o, s, reduction="none").shape == (10,)


def test_errors() -> None:
    sal = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="inside the 32x32 image"):
        pointing_game_accuracy(sal, torch.tensor([[0.0, 0.0, 40.0, 8.0]] * 2), (32, 32))
    with pytest.raises(ValueError, match="inside"):
        box_to_mask(torch.tensor([[5.0, 0.0, 5.0, 8.0]]), (4, 4), (32, 32))  # empty box
    with pytest.raises(ValueError, match="inside"):
        box_to_mask(torch.tensor([[-1.0, 0.0, 5.0, 8.0]]), (4, 4), (32, 32))
    with pytest.raises(ValueError, match="batch size 2"):
        energy_pointing_game(sal, torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \(B, 4\)"):
        box_to_mask(torch.zeros(2, 3), (4, 4))
    with pytest.raises(ValueError, match="dtype bool"):
        energy_pointing_game(sal, torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match="finite"):
        energy_pointing_game(sal * float("nan"), torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="image_size"):
        box_to_mask(torch.zeros(1, 4), (4, 4), (0, 4))
    with pytest.raises(ValueError, match="reduction"):
        pointing_game_accuracy(sal, torch.ones(2, 4, 4, dtype=torch.bool), reduction="median")
    with pytest.raises(ValueError, match="num_steps"):
        perturbation_keep_masks(torch.rand(2, 3), "deletion", num_steps=0)
    with pytest.raises(ValueError, match="candidates"):
        perturbation_keep_masks(torch.rand(2, 3), "deletion", candidates=torch.ones(2, 4).bool())
    with pytest.raises(ValueError, match="mode"):
        perturbation_keep_masks(torch.rand(2, 3), "both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2 points"):
        curve_auc(torch.rand(2, 1))
    with pytest.raises(ValueError, match="equal shape"):
        pair_confidence_drop(torch.rand(3), torch.rand(2))
