"""One formula, several input formats or users: the formats agree, and match a reference
(scipy, a hand loop)."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from lico_lightning.functional import (
    average_drop,
    box_to_mask,
    curve_auc,
    energy_pointing_game,
    increase_in_confidence,
    normalize_saliency,
    pair_confidence_drop,
    pair_confidence_increase,
    pointing_game,
    spearman_correlation,
)


# ------------------------------------------------------------------ Spearman
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spearman_agrees_with_scipy_and_handles_constant_rows_as_asked(dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(5, 60, generator=gen).round(decimals=1).to(dtype)  # ties
    b = (a + torch.randn(5, 60, generator=gen)).to(dtype)
    rho = spearman_correlation(a, b)
    assert rho.dtype == dtype
    for i in range(5):
        want = stats.spearmanr(a[i].numpy(), b[i].numpy()).statistic
        assert float(rho[i]) == pytest.approx(want, abs=1e-6)
    # a constant row: an error by default (p-faithfulness), 0 when asked (sanity check)
    a[0] = 1.0
    assert float(spearman_correlation(a, b, constant="zero")[0]) == 0.0
    torch.testing.assert_close(spearman_correlation(a, b, constant="zero")[1:], rho[1:])
    with pytest.raises(ValueError, match="constant"):
        spearman_correlation(a, b)


def test_spearman_ranks_low_precision_inputs_exactly() -> None:
    # 600 coalitions: bfloat16 cannot hold every rank, the float64 core can
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(600, generator=gen, dtype=torch.float64)
    b = a + 0.5 * torch.randn(600, generator=gen, dtype=torch.float64)
    want = stats.spearmanr(a.bfloat16().double().numpy(), b.bfloat16().double().numpy()).statistic
    got = spearman_correlation(a.bfloat16(), b.bfloat16())
    assert got.dtype == torch.bfloat16
    assert float(got) == pytest.approx(want, abs=2e-3)  # half a bfloat16 step at 0.9


# ------------------------------------------------------------------ localisation
def _one_box_per_map(n: int, size: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """Random non-empty boxes with integer edges (edges land on patch centres of 8-px cells)."""
    h, w = size
    x = torch.randint(0, w + 1, (n, 2), generator=gen)
    y = torch.randint(0, h + 1, (n, 2), generator=gen)
    x1, x2 = x.min(1).values, x.max(1).values
    y1, y2 = y.min(1).values, y.max(1).values
    x2, y2 = torch.maximum(x2, x1 + 1).clamp(max=w), torch.maximum(y2, y1 + 1).clamp(max=h)
    x1, y1 = torch.minimum(x1, x2 - 1), torch.minimum(y1, y2 - 1)
    return torch.stack([x1, y1, x2, y2], 1).float()


@pytest.mark.parametrize("tolerance", [0.0, 1.5])
def test_box_list_box_tensor_and_mask_formats_agree_at_pixel_resolution(tolerance) -> None:
    gen = torch.Generator().manual_seed(2)
    sal = torch.randn(40, 12, 10, generator=gen).round(decimals=0)  # ties: first argmax
    sal[0] = 0.0  # constant map points at the top-left pixel
    boxes = _one_box_per_map(40, (12, 10), gen)
    masks = box_to_mask(boxes, (12, 10))
    hits = pointing_game(sal, list(boxes[:, None]), tolerance=tolerance, reduction="none")
    assert 0 < int(hits.sum()) < 40  # both outcomes occur
    assert torch.equal(pointing_game(sal, boxes, tolerance=tolerance, reduction="none"), hits)
    assert torch.equal(pointing_game(sal, masks, tolerance=tolerance, reduction="none"), hits)
    energy = energy_pointing_game(sal, list(boxes[:, None]), reduction="none")
    torch.testing.assert_close(energy_pointing_game(sal, boxes, reduction="none"), energy)
    torch.testing.assert_close(energy_pointing_game(sal, masks, reduction="none"), energy)
    # naive loop: the peak pixel's centre within `tolerance` of the box (edges included)
    for b in range(40):
        peak = int(sal[b].flatten().argmax())
        cy, cx = peak // 10 + 0.5, peak % 10 + 0.5
        x1, y1, x2, y2 = boxes[b].tolist()
        dx, dy = max(x1 - cx, 0, cx - x2), max(y1 - cy, 0, cy - y2)
        assert float(hits[b]) == float((dx * dx + dy * dy) ** 0.5 <= tolerance)


def test_grounding_pointing_game_boxes_equal_their_masks_on_a_patch_grid() -> None:
    # 4x5 patches of 8 px: integer box edges often pass exactly through a patch centre
    gen = torch.Generator().manual_seed(3)
    sal = torch.randn(64, 4, 5, generator=gen)
    boxes = _one_box_per_map(64, (32, 40), gen)
    masks = box_to_mask(boxes, (4, 5), (32, 40))
    got = pointing_game(sal, boxes, tolerance=0, image_size=(32, 40), reduction="none")
    assert torch.equal(got, pointing_game(sal, masks, tolerance=0, reduction="none"))
    # and a naive loop over the peak cell's centre (edges included)
    for b in range(64):
        peak = int(sal[b].flatten().argmax())
        cy, cx = (peak // 5 + 0.5) * 8, (peak % 5 + 0.5) * 8
        x1, y1, x2, y2 = boxes[b].tolist()
        assert bool(got[b]) == (x1 <= cx <= x2 and y1 <= cy <= y2)


# ------------------------------------------------------------------ faithfulness
@pytest.mark.parametrize("steps", [1, 4, 27])
def test_curve_auc_evenly_spaced_and_explicit_fractions_agree_with_a_loop(steps: int) -> None:
    gen = torch.Generator().manual_seed(4)
    curves = torch.rand(6, steps + 1, generator=gen, dtype=torch.float64)
    fractions = torch.arange(steps + 1, dtype=torch.float64) / steps
    want = [sum((c[j] + c[j + 1]) / 2 / steps for j in range(steps)) for c in curves.tolist()]
    torch.testing.assert_close(curve_auc(curves), torch.tensor(want, dtype=torch.float64))
    torch.testing.assert_close(curve_auc(curves, fractions), curve_auc(curves))


def test_confidence_views_share_the_increase_and_differ_only_by_the_relative_drop() -> None:
    # Grad-CAM++ on a classifier vs M2IB's eqs. 17-18 on the same scores Y (image) and O
    # (explanation map): the increase is the same indicator, the drop is divided by Y.
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 4))
    gen = torch.Generator().manual_seed(5)
    images = torch.randn(32, 3, 4, 4, generator=gen)
    sal = torch.rand(32, 4, 4, generator=gen)
    target = torch.randint(0, 4, (32,), generator=gen)
    drop = average_drop(net, images, sal, target, reduction="none")
    increase = increase_in_confidence(net, images, sal, target, reduction="none").bool()
    with torch.no_grad():
        explanation = images * normalize_saliency(sal)[:, None]
        y = net(images).softmax(-1).gather(1, target[:, None])[:, 0]
        o = net(explanation).softmax(-1).gather(1, target[:, None])[:, 0]
    assert 0 < int(increase.sum()) < 32  # both outcomes occur
    # the papers' formulas by hand: AD = max(0, Y - O) / Y, IC = [Y < O]
    torch.testing.assert_close(drop, (y - o).clamp(min=0) / y)
    assert torch.equal(increase, y < o)
    assert float(drop.max()) > 0  # not an all-zero comparison
    torch.testing.assert_close(pair_confidence_increase(y, o, reduction="none"), increase.float())
    torch.testing.assert_close(pair_confidence_drop(y, o, reduction="none") / y, drop)
    torch.testing.assert_close(
        increase_in_confidence(net, images, sal, target), increase.float().mean()
    )
    torch.testing.assert_close(average_drop(net, images, sal, target), drop.mean())
