"""CAM algebra vs straightforward loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lico_lightning.functional.cam import (
    draw_rise_parameters,
    grad_cam_plus_plus_weights,
    grad_cam_weights,
    rise_masks,
    upsample_saliency,
    weighted_activation_map,
)


def test_grad_cam_and_weighted_map_match_loops():
    a, g = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    w = grad_cam_weights(g)
    cam = weighted_activation_map(a, w)
    for b in range(2):
        ref = torch.zeros(4, 5)
        for n in range(3):
            wn = sum(float(g[b, n, i, j]) for i in range(4) for j in range(5)) / 20
            assert float(w[b, n]) == pytest.approx(wn, abs=1e-6)
            ref += wn * a[b, n]
        torch.testing.assert_close(cam[b], ref.clamp_min(0), atol=1e-5, rtol=1e-5)


def test_grad_cam_plus_plus_weights_match_loop():
    a, g = torch.rand(2, 3, 3, 3), torch.randn(2, 3, 3, 3)
    g[0, 0, 0, 0] = 0.0  # alpha := 0 where the gradient vanishes
    w = grad_cam_plus_plus_weights(a, g)
    for b in range(2):
        for n in range(3):
            s = float(a[b, n].sum())
            ref = 0.0
            for i in range(3):
                for j in range(3):
                    gij = float(g[b, n, i, j])
                    if gij == 0:
                        continue
                    alpha = gij**2 / (2 * gij**2 + s * gij**3)
                    ref += alpha * max(gij, 0.0)
            assert float(w[b, n]) == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_rise_masks_match_naive_upsample_and_crop():
    g = torch.Generator().manual_seed(0)
    grids, shifts = draw_rise_parameters(5, 3, 0.5, (10, 13), g)
    masks = rise_masks(grids, shifts, (10, 13))
    ch, cw = math.ceil(10 / 3), math.ceil(13 / 3)
    assert shifts[:, 0].max() < ch and shifts[:, 1].max() < cw
    for i in range(5):
        up = F.interpolate(
            grids[i][None, None], size=(4 * ch, 4 * cw), mode="bilinear", align_corners=False
        )[0, 0]
        dy, dx = shifts[i].tolist()
        torch.testing.assert_close(masks[i], up[dy : dy + 10, dx : dx + 13])
    # same seed -> same draw; the draw does not touch the global RNG
    state = torch.get_rng_state()
    again = draw_rise_parameters(5, 3, 0.5, (10, 13), torch.Generator().manual_seed(0))
    assert torch.equal(again[0], grids) and torch.equal(again[1], shifts)
    assert torch.equal(torch.get_rng_state(), state)


def test_upsample_to_an_empty_size_is_rejected():
    with pytest.raises(
        ValueError, match=r"Expected `size` to be two positive ints \(H, W\), but got \(0, 0\)"
    ):
        upsample_saliency(torch.rand(1, 4, 4), (0, 0))
    with pytest.raises(ValueError, match="two positive ints"):
        upsample_saliency(torch.rand(1, 4, 4), (8,))
    assert upsample_saliency(torch.rand(1, 4, 4), [8, 6]).shape == (1, 8, 6)


def test_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        grad_cam_plus_plus_weights(torch.rand(1, 2, 3, 3), torch.rand(1, 2, 3, 4))
    with pytest.raises(ValueError, match="weights"):
        weighted_activation_map(torch.rand(1, 2, 3, 3), torch.rand(1, 3))
