"""Ground-truth measures against naive loops, SciPy and hand-computed cases."""

from __future__ import annotations

import random

import pytest
import torch
from scipy import stats

from lico_lightning import functional as F


# ------------------------------------------------------------------ relevance rank accuracy
def _naive_top_k_hits(values: list[float], inside: list[bool]) -> float:
    """Quantus' definition without ties: the K largest cells (K = mask size), share inside."""
    k = sum(inside)
    top = sorted(range(len(values)), key=lambda p: -values[p])[:k]
    return sum(inside[p] for p in top) / k


def test_rank_accuracy_equals_the_top_k_loop_without_ties() -> None:
    g = torch.Generator().manual_seed(0)
    sal = torch.randn(6, 5, 7, generator=g)  # continuous: no ties
    mask = torch.rand(6, 5, 7, generator=g) > 0.6
    got = F.relevance_rank_accuracy(sal, mask, reduction="none")
    want = [
        _naive_top_k_hits(s.flatten().tolist(), m.flatten().tolist()) for s, m in zip(sal, mask)
    ]
    torch.testing.assert_close(got, torch.tensor(want))
    assert float(F.relevance_rank_accuracy(sal, mask)) == pytest.approx(sum(want) / 6, abs=1e-6)


def test_rank_accuracy_shares_ties_as_random_tie_breaking_does_on_average() -> None:
    g = torch.Generator().manual_seed(1)
    sal = torch.randint(0, 3, (3, 4, 4), generator=g).float()  # many ties
    mask = torch.rand(3, 4, 4, generator=g) > 0.5
    got = F.relevance_rank_accuracy(sal, mask, reduction="none")
    rng = random.Random(0)
    for b in range(3):
        values, inside = sal[b].flatten().tolist(), mask[b].flatten().tolist()
        k, draws = sum(inside), 20_000
        total = 0.0
        for _ in range(draws):  # random tie-breaking: sort by (value, random key)
            keys = [rng.random() for _ in values]
            top = sorted(range(16), key=lambda p: (-values[p], keys[p]))[:k]
            total += sum(inside[p] for p in top) / k
        assert float(got[b]) == pytest.approx(total / draws, abs=0.01)
    # a constant map sits at chance level |M| / hw
    const = F.relevance_rank_accuracy(torch.ones(3, 4, 4), mask, reduction="none")
    torch.testing.assert_close(const, mask.flatten(1).float().mean(1))


def test_rank_accuracy_boxes_equal_their_masks_and_empty_regions_are_skipped() -> None:
    g = torch.Generator().manual_seed(2)
    sal = torch.randn(3, 8, 8, generator=g)
    boxes = torch.tensor([[0.0, 0.0, 16.0, 8.0], [8.0, 8.0, 32.0, 32.0], [4.0, 4.0, 20.0, 12.0]])
    masks = F.box_to_mask(boxes, (8, 8), (32, 32))
    torch.testing.assert_close(
        F.relevance_rank_accuracy(sal, boxes, image_size=(32, 32), reduction="none"),
        F.relevance_rank_accuracy(sal, masks, reduction="none"),
    )
    masks[1] = False
    out = F.relevance_rank_accuracy(sal, masks, reduction="none")
    assert out[1].isnan() and not out[[0, 2]].isnan().any()
    assert float(F.relevance_rank_accuracy(sal, masks)) == pytest.approx(float(out[[0, 2]].mean()))
    with pytest.raises(ValueError, match="at least one image"):
        F.relevance_rank_accuracy(sal, torch.zeros(3, 8, 8, dtype=torch.bool))


# ------------------------------------------------------------------ intervention correctness
@pytest.mark.parametrize("mass", ["mean", "sum"])
def test_intervention_correctness_equals_scipy_on_naive_masses(mass) -> None:
    g = torch.Generator().manual_seed(3)
    sal = torch.randn(5, 6, 6, generator=g)
    regions = torch.rand(5, 4, 6, 6, generator=g) > 0.7
    effects = torch.randn(5, 4, generator=g)
    got = F.intervention_correctness(sal, regions, effects, mass=mass, reduction="none")
    for b in range(5):
        masses = []
        for o in range(4):
            cells = [float(sal[b, i, j]) for i in range(6) for j in range(6) if regions[b, o, i, j]]
            masses.append(sum(cells) / (len(cells) if mass == "mean" else 1))
        want = stats.spearmanr(effects[b].tolist(), masses).statistic
        assert float(got[b]) == pytest.approx(want, abs=1e-6)


def test_intervention_correctness_hand_cases_ties_and_undefined_rows() -> None:
    sal = torch.zeros(3, 4, 4)
    sal[:, 0, 0] = 5.0  # all mass on object 0 (box top-left)
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0], [0.0, 2.0, 2.0, 4.0]])
    boxes = boxes.expand(3, 3, 4)
    effects = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    got = F.intervention_correctness(sal, boxes, effects, reduction="none")
    # masses (5, 0, 0): the faithful row scores 1, the row with the effect elsewhere -0.5,
    # a row whose effects are all equal has no correlation (NaN, left out of the mean)
    assert got[0] == pytest.approx(1.0) and got[1] == pytest.approx(-0.5) and got[2].isnan()
    assert float(F.intervention_correctness(sal, boxes, effects)) == pytest.approx(0.25)
    flat = F.intervention_correctness(torch.ones(3, 4, 4) * 0, boxes, effects, reduction="none")
    assert flat.isnan().all()  # constant masses: undefined too (FunnyBirds skips them)


def test_intervention_correctness_boxes_equal_masks_and_bad_shapes_fail() -> None:
    g = torch.Generator().manual_seed(4)
    sal = torch.randn(2, 8, 8, generator=g)
    boxes = torch.tensor([[[0.0, 0.0, 4.0, 4.0], [4.0, 4.0, 8.0, 8.0], [0.0, 4.0, 8.0, 8.0]]] * 2)
    masks = F.box_to_mask(boxes.flatten(0, 1), (8, 8)).view(2, 3, 8, 8)
    effects = torch.randn(2, 3, generator=g)
    torch.testing.assert_close(
        F.intervention_correctness(sal, boxes, effects, reduction="none"),
        F.intervention_correctness(sal, masks, effects, reduction="none"),
    )
    with pytest.raises(ValueError, match=r"`effects` of shape \(B, O\)"):
        F.intervention_correctness(sal, masks, effects[:, :1])
    with pytest.raises(ValueError, match="`regions` of shape"):
        F.intervention_correctness(sal, masks[:, :2], effects)
    with pytest.raises(ValueError, match="finite"):
        F.intervention_correctness(sal, masks, effects * float("nan"))
    with pytest.raises(ValueError, match="mass"):
        F.intervention_correctness(sal, masks, effects, mass="max")
    # probes without the ground truth a measure needs: the message says what to pass
    with pytest.raises(TypeError, match=r"object_masks"):
        F.intervention_correctness(sal, None, effects)
    with pytest.raises(TypeError, match=r"intervention_effect"):
        F.intervention_correctness(sal, masks, None)
    with pytest.raises(TypeError, match=r"target_mask"):
        F.relevance_rank_accuracy(sal, None)


# ------------------------------------------------------------------ intervention effect
def test_intervention_effect_equals_a_naive_loop() -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 3, generator=g)
    cf = torch.randn(4, 5, 3, generator=g)
    target = torch.tensor([0, 2, 1, 2])
    got = F.intervention_effect(logits, cf, target, reduction="none")
    want = [[float(logits[b, target[b]] - cf[b, o, target[b]]) for o in range(5)] for b in range(4)]
    torch.testing.assert_close(got, torch.tensor(want))
    torch.testing.assert_close(
        F.intervention_effect(logits, cf, target), torch.tensor(want).mean(0)
    )
    one = F.intervention_effect(logits, cf[:, 1], target, reduction="none")
    torch.testing.assert_close(one, got[:, 1])
    with pytest.raises(ValueError, match="counterfactual_logits"):
        F.intervention_effect(logits, cf[:, :, :2], target)
    with pytest.raises(ValueError, match=r"`target` in \[0, 3\)"):
        F.intervention_effect(logits, cf, torch.tensor([0, 3, 1, 2]))


# ------------------------------------------------------------------ group accuracy
def test_group_accuracy_equals_a_naive_loop() -> None:
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(40, 3, generator=g)
    target = torch.randint(0, 3, (40,), generator=g)
    group = torch.randint(0, 5, (40,), generator=g)  # group 5 of 6 stays empty
    per = F.group_accuracy(logits, target, group, 6, reduction="none")
    pred = logits.argmax(1).tolist()
    want = []
    for k in range(6):
        rows = [i for i in range(40) if int(group[i]) == k]
        want.append(sum(pred[i] == int(target[i]) for i in rows) / len(rows) if rows else None)
    for k in range(6):
        if want[k] is None:
            assert per[k].isnan()
        else:
            assert float(per[k]) == pytest.approx(want[k])
    seen = [w for w in want if w is not None]
    assert float(F.group_accuracy(logits, target, group, 6)) == pytest.approx(min(seen))
    assert float(F.group_accuracy(logits.argmax(1), target, group, 6, reduction="mean")) == (
        pytest.approx(sum(seen) / len(seen))
    )


def test_group_accuracy_bad_input() -> None:
    target = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"`group` in \[0, 2\)"):
        F.group_accuracy(target, target, torch.tensor([0, 2]), 2)
    with pytest.raises(ValueError, match="`group` to be a"):
        F.group_accuracy(target, target, torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(TypeError, match="preds"):
        F.group_accuracy(target.float(), target, target, 2)
    with pytest.raises(ValueError, match="at least one sample"):
        F.reduce_group_accuracy(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
