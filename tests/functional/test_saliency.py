"""Saliency metrics vs naive per-sample loops, hand cases and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from torch import nn

from lico_lightning.functional import (
    average_drop,
    blur_images,
    curve_auc,
    deletion_auc,
    energy_pointing_game,
    increase_in_confidence,
    insertion_auc,
    insertion_deletion_auc,
    insertion_deletion_curves,
    normalize_saliency,
    perturbation_curve,
    pointing_game,
    spearman_correlation,
)


def confidence_change(model, images, sal, target, clean=None):
    """Both Grad-CAM++ confidence metrics per sample: ``(drop, increase as bool)``."""
    drop = average_drop(model, images, sal, target, "none", clean)
    return drop, increase_in_confidence(model, images, sal, target, "none", clean).bool()


def _tiny_model(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    ).eval()


# ------------------------------------------------------------------ insertion / deletion
def _naive_curve(model, image, sal, target, mode, step_fraction, substrate_img):
    """One image, python loops: rank pixels, reveal/remove them step by step."""
    _, h, w = image.shape
    hw = h * w
    values = sal.flatten().tolist()
    order = sorted(range(hw), key=lambda p: (-values[p], p))
    step = max(1, round(step_fraction * hw))
    n = math.ceil(hw / step)
    start, finish = (substrate_img, image) if mode == "insertion" else (image, substrate_img)
    current = start.clone()
    xs, ys = [], []
    for i in range(n + 1):
        with torch.no_grad():
            p = model(current[None]).softmax(-1)[0, target].item()
        xs.append(min(i * step, hw) / hw)
        ys.append(p)
        for pix in order[i * step : (i + 1) * step]:
            r, c = divmod(pix, w)
            current[:, r, c] = finish[:, r, c]
    auc = sum((xs[k] - xs[k - 1]) * (ys[k] + ys[k - 1]) / 2 for k in range(1, len(xs)))
    return xs, ys, auc


@pytest.mark.parametrize("mode", ["insertion", "deletion"])
@pytest.mark.parametrize("substrate", ["blur", "zero"])
@pytest.mark.parametrize("step_fraction", [0.036, 0.1, 0.25])
def test_perturbation_curve_matches_naive_loop(mode, substrate, step_fraction):
    model = _tiny_model()
    images = torch.randn(3, 3, 7, 9)
    sal = torch.rand(3, 7, 9)
    sal[0, :2] = 0.5  # ties: stable order by row-major index
    target = torch.tensor([0, 3, 1])
    fr, scores = perturbation_curve(
        model,
        images,
        sal,
        target,
        mode,
        step_fraction=step_fraction,
        substrate=substrate,
        chunk_size=5,
    )
    sub = blur_images(images) if substrate == "blur" else torch.zeros_like(images)
    fn = insertion_auc if mode == "insertion" else deletion_auc
    aucs = fn(
        model,
        images,
        sal,
        target,
        step_fraction=step_fraction,
        substrate=substrate,
        reduction="none",
    )
    for b in range(3):
        xs, ys, auc = _naive_curve(
            model, images[b], sal[b], int(target[b]), mode, step_fraction, sub[b]
        )
        torch.testing.assert_close(fr, torch.tensor(xs))
        torch.testing.assert_close(scores[b], torch.tensor(ys), atol=1e-5, rtol=1e-5)
        assert abs(float(aucs[b]) - auc) < 1e-5
    mean = fn(model, images, sal, target, step_fraction=step_fraction, substrate=substrate)
    torch.testing.assert_close(mean, aucs.mean())


def test_curve_endpoints_and_chunk_invariance():
    model = _tiny_model()
    images, sal, target = torch.randn(2, 3, 10, 10), torch.rand(2, 10, 10), torch.tensor([1, 2])
    probs = model(images).softmax(-1)[torch.arange(2), target]
    probs_blur = model(blur_images(images)).softmax(-1)[torch.arange(2), target]
    _, ins = perturbation_curve(model, images, sal, target, "insertion", chunk_size=1)
    _, ins_big = perturbation_curve(model, images, sal, target, "insertion", chunk_size=1000)
    torch.testing.assert_close(ins, ins_big)
    torch.testing.assert_close(ins[:, 0], probs_blur.detach())
    torch.testing.assert_close(ins[:, -1], probs.detach())
    _, dele = perturbation_curve(model, images, sal, target, "deletion", substrate="zero")
    torch.testing.assert_close(dele[:, 0], probs.detach())
    zero = model(torch.zeros_like(images)).softmax(-1)[torch.arange(2), target]
    torch.testing.assert_close(dele[:, -1], zero.detach())


def test_lico_step_and_rise_auc_formula():
    # 3.6 % of a 224 x 224 image = 1806 pixels per step -> 28 steps (29 points).
    model = lambda x: torch.zeros(x.shape[0], 2)  # noqa: E731
    fr, _ = perturbation_curve(
        model,
        torch.zeros(1, 1, 224, 224),
        torch.rand(1, 224, 224),
        torch.tensor([0]),
        chunk_size=64,
    )
    assert fr.numel() == 29 and float(fr[1]) == pytest.approx(1806 / 224**2)
    # When the step divides H*W the trapezoid equals RISE's (sum - p0/2 - pn/2) / n.
    fr = torch.linspace(0, 1, 5)
    p = torch.rand(3, 5)
    rise = (p.sum(1) - p[:, 0] / 2 - p[:, -1] / 2) / 4
    torch.testing.assert_close(curve_auc(p, fr), rise)


def test_blur_matches_scipy_mirror_convolution():
    images = torch.randn(2, 3, 16, 12)
    k, sigma = 7, 2.0
    x = np.arange(k) - k // 2
    kern = np.exp(-(x**2) / (2 * sigma**2))
    kern /= kern.sum()
    ref = ndimage.convolve1d(images.numpy(), kern, axis=-1, mode="mirror")
    ref = ndimage.convolve1d(ref, kern, axis=-2, mode="mirror")
    torch.testing.assert_close(
        blur_images(images, k, sigma), torch.from_numpy(ref), atol=1e-5, rtol=1e-5
    )
    # kernel larger than a tiny image is shrunk instead of failing
    assert blur_images(torch.randn(1, 1, 3, 3), 11, 5.0).shape == (1, 1, 3, 3)


# ------------------------------------------------------------------ average drop / increase
def test_confidence_change_matches_naive():
    model = _tiny_model()
    images, sal, target = torch.randn(5, 3, 6, 6), torch.randn(5, 6, 6), torch.randint(0, 4, (5,))
    drop, inc = confidence_change(model, images, sal, target)
    for b in range(5):
        s = sal[b]
        s = (s - s.min()) / (s.max() - s.min())
        with torch.no_grad():
            y = model(images[b : b + 1]).softmax(-1)[0, target[b]].item()
            o = model((images[b] * s)[None]).softmax(-1)[0, target[b]].item()
        assert float(drop[b]) == pytest.approx(max(0.0, y - o) / y, abs=1e-6)
        assert bool(inc[b]) == (y < o)
    torch.testing.assert_close(average_drop(model, images, sal, target), drop.mean())
    torch.testing.assert_close(
        increase_in_confidence(model, images, sal, target), inc.float().mean()
    )


def test_confidence_change_with_known_clean_probability_runs_only_the_explanations():
    model = _tiny_model()
    images, sal, target = torch.randn(5, 3, 6, 6), torch.randn(5, 6, 6), torch.randint(0, 4, (5,))
    with torch.no_grad():
        clean = model(images).softmax(-1).gather(1, target[:, None]).squeeze(1)
    rows: list[int] = []
    handle = model.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    try:
        drop = average_drop(model, images, sal, target, "none", clean)
    finally:
        handle.remove()
    assert rows == [5]  # the explanation maps only
    inc = increase_in_confidence(model, images, sal, target, "none", clean).bool()
    ref_drop, ref_inc = confidence_change(model, images, sal, target)  # checked against naive
    torch.testing.assert_close(drop, ref_drop)
    assert torch.equal(inc, ref_inc)
    with pytest.raises(ValueError, match="clean_probability"):
        average_drop(model, images, sal, target, "none", clean[:3])


def test_normalize_saliency_constant_map_is_zero_not_nan():
    out = normalize_saliency(torch.stack([torch.full((3, 3), 2.0), torch.arange(9.0).view(3, 3)]))
    assert torch.isfinite(out).all() and out[0].abs().sum() == 0 and out[1].max() == 1


# ------------------------------------------------------------------ pointing game
def _naive_pointing(sal, boxes, tol):
    """Loop over every pixel: the hit region is every pixel centre within tol of a box."""
    h, w = sal.shape
    if len(boxes) == 0:
        return None
    flat = sal.flatten().tolist()
    peak = max(range(h * w), key=lambda p: (flat[p], -p))  # first maximum in row-major order
    r, c = divmod(peak, w)
    cx, cy = c + 0.5, r + 0.5
    for x1, y1, x2, y2 in boxes.tolist():
        dx = max(x1 - cx, 0.0, cx - x2)
        dy = max(y1 - cy, 0.0, cy - y2)
        if math.sqrt(dx * dx + dy * dy) <= tol:
            return True
    return False


def test_pointing_game_several_boxes_tolerance_and_empty():
    sal = torch.zeros(5, 40, 60)
    sal[0, 5, 5] = 1  # inside the second box
    sal[1, 15, 34] = 1  # centre (34.5, 15.5): 14.5 px right of x2=20 -> hit with tol 15
    sal[2, 15, 35] = 1  # 15.5 px -> miss
    sal[3, 39, 59] = 1  # far away -> miss
    sal[4, 0, 0] = 1  # no boxes -> skipped
    box = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    boxes = [
        torch.tensor([[30.0, 30.0, 40.0, 39.0], [0.0, 0.0, 8.0, 8.0]]),
        box,
        box,
        torch.cat([box, box + 1]),
        torch.zeros(0, 4),
    ]
    hits = pointing_game(sal, boxes, tolerance=15, reduction="none")
    assert hits[:4].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert hits[4].isnan()  # no box: not scored
    assert float(pointing_game(sal, boxes, tolerance=15)) == pytest.approx(2 / 4)
    # exactly on the tolerance boundary counts as a hit (<=)
    edge = [torch.tensor([[10.0, 10.0, 19.5, 20.0]])]
    assert pointing_game(sal[1:2], edge, tolerance=15, reduction="none")[0].item() == 1.0
    assert pointing_game(sal[1:2], edge, tolerance=14.99, reduction="none")[0].item() == 0.0
    # tolerance 0: the point must be inside a box
    assert (
        pointing_game(sal[1:2], box[None].unbind(0), tolerance=0, reduction="none")[0].item() == 0.0
    )
    # all images without boxes: no accuracy (neither a silent 0 nor NaN)
    with pytest.raises(ValueError, match="at least one map with a region"):
        pointing_game(sal[4:], [torch.zeros(0, 4)])


def test_pointing_game_matches_naive_random():
    g = torch.Generator().manual_seed(3)
    sal = torch.rand(20, 24, 30, generator=g).round(decimals=1)  # many ties
    boxes = []
    for i in range(20):
        k = i % 4
        xy = torch.rand(k, 2, generator=g) * torch.tensor([30.0, 24.0])
        wh = torch.rand(k, 2, generator=g) * 6
        b = torch.cat([xy, (xy + wh).minimum(torch.tensor([30.0, 24.0]))], 1)
        boxes.append(b)
    for tol in (0.0, 3.0, 15.0):
        hits = pointing_game(sal, boxes, tolerance=tol, reduction="none")
        valid = ~hits.isnan()
        for i in range(20):
            ref = _naive_pointing(sal[i], boxes[i], tol)
            assert bool(valid[i]) == (ref is not None)
            if ref is not None:
                assert bool(hits[i]) == ref


def test_energy_pointing_game_hand_case_and_naive():
    sal = torch.zeros(2, 4, 6)
    sal[0, 0, 0] = 2.0
    sal[0, 3, 5] = 1.0
    sal[0, 1, 1] = -5.0  # negative saliency ignored
    sal[0, 2, 4] = 1.0
    # union of two overlapping boxes covers (0,0) and (2,4) but not (3,5): energy 3/4
    boxes = [torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 5.0, 3.0]]), torch.zeros(0, 4)]
    energy = energy_pointing_game(sal, boxes, reduction="none")
    valid = ~energy.isnan()
    assert float(energy[0]) == pytest.approx(3 / 4)
    assert valid.tolist() == [True, False]
    assert float(energy_pointing_game(sal, boxes)) == pytest.approx(3 / 4)
    # zero saliency -> 0, not NaN
    assert float(energy_pointing_game(torch.zeros(1, 4, 6), boxes[:1])) == 0.0

    g = torch.Generator().manual_seed(0)
    sal = torch.randn(6, 9, 11, generator=g)
    boxes = [torch.tensor([[1.0, 2.0, 5.5, 8.0], [4.0, 0.0, 11.0, 3.0]])[: i % 3] for i in range(6)]
    energy = energy_pointing_game(sal, boxes, reduction="none")
    valid = ~energy.isnan()
    for i in range(6):
        inside, total = 0.0, 0.0
        for r in range(9):
            for c in range(11):
                v = max(float(sal[i, r, c]), 0.0)
                total += v
                if any(
                    x1 <= c + 0.5 <= x2 and y1 <= r + 0.5 <= y2
                    for x1, y1, x2, y2 in boxes[i].tolist()
                ):
                    inside += v
        assert bool(valid[i]) == (len(boxes[i]) > 0)
        if valid[i]:
            assert float(energy[i]) == pytest.approx(inside / total, abs=1e-6)


# ------------------------------------------------------------------ spearman
def test_spearman_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(6, 50, generator=g).round(decimals=1)
    b = a + 0.3 * torch.randn(6, 50, generator=g)
    b[2] = torch.rand(50, generator=g).round()
    rho = spearman_correlation(a.flatten(1), b.flatten(1))
    for i in range(6):
        ref = stats.spearmanr(a[i].numpy(), b[i].numpy()).statistic
        assert float(rho[i]) == pytest.approx(ref, abs=1e-6)
    assert (
        float(spearman_correlation(torch.ones(1, 5), torch.rand(1, 5), constant="zero")[0]) == 0.0
    )


# ------------------------------------------------------------------ errors (item 8)
def test_bad_input_errors():
    model = _tiny_model()
    images, sal = torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match="Expected boxes"):
        pointing_game(sal, [torch.tensor([[0.0, 0.0, 9.0, 4.0]]), torch.zeros(0, 4)])
    with pytest.raises(ValueError, match="Expected boxes"):
        energy_pointing_game(sal, [torch.tensor([[5.0, 0.0, 4.0, 4.0]]), torch.zeros(0, 4)])
    with pytest.raises(ValueError, match="one \\(K_i, 4\\) tensor per image"):
        pointing_game(sal, [torch.zeros(1, 4)])
    with pytest.raises(ValueError, match="of shape \\(K, 4\\)"):
        pointing_game(sal, [torch.zeros(1, 3), torch.zeros(0, 4)])
    with pytest.raises(ValueError, match="dtype bool"):  # a 3-D tensor is a mask
        pointing_game(sal, torch.zeros(2, 8, 8))
    with pytest.raises(TypeError, match="list of B tensors"):
        pointing_game(sal, "boxes")
    with pytest.raises(ValueError, match="saliency"):
        insertion_auc(model, images, torch.rand(2, 7, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target"):
        deletion_auc(model, images, sal, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="target"):  # the bad target is not in chunk 1
        deletion_auc(model, images, sal, torch.tensor([0, 4]), chunk_size=1)
    with pytest.raises(ValueError, match="target"):
        average_drop(model, images, sal, torch.tensor([-1, 0]))
    with pytest.raises(TypeError, match=r"torch\.long"):
        insertion_auc(model, images, sal, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="step_fraction"):
        insertion_auc(model, images, sal, torch.tensor([0, 1]), step_fraction=0.0)
    with pytest.raises(ValueError, match="substrate"):
        deletion_auc(model, images, sal, torch.tensor([0, 1]), substrate="noise")


@pytest.mark.parametrize("deletion_substrate", ["blur", "zero"])
def test_joint_curves_equal_separate_curves_with_fewer_forwards(deletion_substrate):
    net = _tiny_model()
    seen = []

    def model(x):
        seen.append(x.shape[0])
        return net(x)

    images, sal, target = torch.randn(3, 3, 6, 5), torch.rand(3, 6, 5), torch.tensor([0, 2, 1])
    fr, ins, dele = insertion_deletion_curves(
        model,
        images,
        sal,
        target,
        step_fraction=0.1,
        deletion_substrate=deletion_substrate,
        chunk_size=7,
    )
    n = fr.numel() - 1
    assert sum(seen) == 3 * (2 * n + (0 if deletion_substrate == "blur" else 1))  # vs 2n + 2
    blurred = blur_images(images)
    del_sub = blurred if deletion_substrate == "blur" else torch.zeros_like(images)
    for b in range(3):  # the independent per-pixel loop, one curve at a time
        t = int(target[b])
        xs, ins_ref, _ = _naive_curve(net, images[b], sal[b], t, "insertion", 0.1, blurred[b])
        _, del_ref, _ = _naive_curve(net, images[b], sal[b], t, "deletion", 0.1, del_sub[b])
        torch.testing.assert_close(fr, torch.tensor(xs))
        torch.testing.assert_close(ins[b], torch.tensor(ins_ref), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(dele[b], torch.tensor(del_ref), atol=1e-5, rtol=1e-5)


def test_perturbation_aucs_dispatch_equals_the_curves():
    """The one dispatcher behind insertion_auc / deletion_auc / insertion_deletion_auc."""
    from lico_lightning.functional.perturbation import _perturbation_aucs

    net = _tiny_model()
    g = torch.Generator().manual_seed(7)
    x, sal = torch.randn(3, 3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)
    t = torch.tensor([0, 1, 2])
    kw = {"step_fraction": 0.25, "chunk_size": 5}
    both = _perturbation_aucs(net, x, sal, t, {"insertion": "blur", "deletion": "zero"}, **kw)
    for mode, substrate in (("insertion", "blur"), ("deletion", "zero")):
        fractions, scores = perturbation_curve(net, x, sal, t, mode, substrate=substrate, **kw)
        torch.testing.assert_close(both[mode], curve_auc(scores, fractions))
        alone = _perturbation_aucs(net, x, sal, t, {mode: substrate}, **kw)
        assert list(alone) == [mode]
        torch.testing.assert_close(alone[mode], both[mode])
    ins, dele = insertion_deletion_auc(
        net, x, sal, t, deletion_substrate="zero", reduction="none", **kw
    )
    torch.testing.assert_close(ins, both["insertion"])
    torch.testing.assert_close(dele, both["deletion"])
    for bad in ({}, {"insertion": "blur", "overall": "blur"}):
        with pytest.raises(ValueError, match="`substrates`"):
            _perturbation_aucs(net, x, sal, t, bad, **kw)
