"""ROAD, the confidence-normalised curve and SRG vs a dense brute-force solve, hand cases, a
statistical check, and Quantus 0.6's ROAD (test-only reference, extra ``[reference]``).

Quantus conventions aligned in the comparisons (see ``road_curves``' docstring):

* noise off on both sides (Quantus draws its noise from NumPy's global generator, we from a
  ``torch.Generator``; no common draws), so both are the plain linear imputation;
* the same fractions: Quantus's integer percentages ``p`` are our ``p / 100`` (both remove
  ``floor(HW · p / 100)`` pixels);
* maps without ties (continuous random values): Quantus orders with NumPy's unstable
  ``argsort(-a)``, we break ties by the lower row-major index;
* Quantus scores ROAD as accuracy (arg-max == label): our ``score="correct"``; for the
  probability curve we score the images Quantus itself feeds the model;
* Quantus has MoRF only: our LeRF equals Quantus on the negated maps;
* Quantus normalises maps by their maximum absolute value (default ``normalise=True``): a
  positive rescaling, no change of order;
* Quantus 0.6's ``ROAD`` raises ``IndexError`` on multi-channel images (it broadcasts a
  ``(B, 1, H, W)`` map over channels and indexes the ``C·H·W`` flattened order into ``H·W``
  pixels), so the whole-metric comparison uses single-channel images and the RGB
  comparison calls its ``noisy_linear_imputation`` directly;
* Quantus solves in float64 with SuperLU; we iterate to ``tol`` (1e-10 here, on float64
  inputs).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lico_lightning.functional import (
    ROAD_NEIGHBOUR_WEIGHTS,
    ImputationConvergenceWarning,
    confidence_normalized_curve,
    curve_auc,
    noisy_linear_imputation,
    road_auc,
    road_curve_fractions,
    road_curves,
    road_removal_masks,
    symmetric_relevance_gain,
    target_probability,
)


def _dense_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Brute force: one equation per removed pixel, written pixel by pixel from the definition
    (value = weighted mean of the in-image neighbours), solved densely per channel."""
    c, h, w = image.shape
    weights = np.asarray(ROAD_NEIGHBOUR_WEIGHTS)
    unknown = [(i, j) for i in range(h) for j in range(w) if removed[i, j]]
    index = {p: n for n, p in enumerate(unknown)}
    a = np.zeros((len(unknown), len(unknown)))
    rhs = np.zeros((len(unknown), c))
    for n, (i, j) in enumerate(unknown):
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                ii, jj, wt = i + di, j + dj, weights[di + 1, dj + 1]
                if wt == 0 or not (0 <= ii < h and 0 <= jj < w):
                    continue
                a[n, n] += wt
                if removed[ii, jj]:
                    a[n, index[(ii, jj)]] -= wt
                else:
                    rhs[n] += wt * image[:, ii, jj]
    out = image.copy()
    if unknown:
        sol = np.linalg.solve(a, rhs)
        for n, (i, j) in enumerate(unknown):
            out[:, i, j] = sol[n]
    return out


def _smooth_map(h: int, w: int, seed: int) -> torch.Tensor:
    """A blob-shaped map (big connected holes: the hard case for the solver), no ties."""
    g = torch.Generator().manual_seed(seed)
    cy, cx = torch.rand(2, generator=g) * torch.tensor([h, w])
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return -((yy - cy) ** 2 + (xx - cx) ** 2).double() + 1e-3 * torch.rand(h, w, generator=g)


@pytest.mark.parametrize(
    ("h", "w", "kind"),
    [(3, 3, "all_but_one"), (5, 7, "random"), (9, 6, "blob"), (16, 16, "blob"), (4, 4, "border")],
)
def test_imputation_equals_dense_solve(h: int, w: int, kind: str) -> None:
    g = torch.Generator().manual_seed(h * w)
    image = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64)
    if kind == "all_but_one":
        removed = torch.ones(2, h, w, dtype=torch.bool)
        removed[0, 0, 0] = removed[1, 1, 2] = False  # one kept pixel, in a corner / at an edge
    elif kind == "random":
        removed = torch.rand(2, h, w, generator=g) < 0.6
    elif kind == "border":
        removed = torch.zeros(2, h, w, dtype=torch.bool)
        removed[:, 0, :] = True
        removed[:, :, -1] = True
    else:
        sal = torch.stack([_smooth_map(h, w, 0), _smooth_map(h, w, 1)])
        removed = road_removal_masks(sal, [0.8], "morf")[:, 0]
    ours = noisy_linear_imputation(image, removed, noise=0.0, tol=1e-12, max_iter=500)
    for b in range(2):
        ref = _dense_imputation(image[b].numpy(), removed[b].numpy())
        np.testing.assert_allclose(ours[b].numpy(), ref, atol=1e-9, rtol=0)


def test_imputation_float32_tolerance_at_224() -> None:
    """Default float32 solve at ROAD's size: within 1e-3 of the dense-free float64 solve with a
    tight tolerance on every removal fraction (10x below ROAD's noise)."""
    sal = _smooth_map(64, 64, 3)[None]
    image = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    for f in (0.1, 0.5, 0.9, 0.99):
        removed = road_removal_masks(sal, [f])[:, 0]
        exact = noisy_linear_imputation(image, removed, noise=0.0, tol=1e-12, max_iter=500)
        fast = noisy_linear_imputation(image.float(), removed, noise=0.0)
        assert float((fast.double() - exact).abs().max()) < 1e-3


def test_imputation_noise_and_kept_pixels() -> None:
    image = torch.randn(4, 3, 20, 20)
    removed = torch.rand(4, 20, 20) < 0.5
    clean = noisy_linear_imputation(image, removed, noise=0.0)
    noisy = noisy_linear_imputation(
        image, removed, noise=0.01, generator=torch.Generator().manual_seed(0)
    )
    again = noisy_linear_imputation(
        image, removed, noise=0.01, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(noisy, again)
    kept = ~removed.unsqueeze(1).expand_as(image)
    assert torch.equal(noisy[kept], image[kept]) and torch.equal(clean[kept], image[kept])
    diff = (noisy - clean)[~kept]
    n = diff.numel()
    assert abs(float(diff.mean())) < 4 * 0.01 / math.sqrt(n)
    assert abs(float(diff.std()) - 0.01) < 4 * 0.01 / math.sqrt(2 * n)


def test_constant_image_is_its_own_imputation() -> None:
    image = torch.full((1, 2, 6, 6), 0.7)
    removed = torch.rand(1, 6, 6) < 0.7
    removed[0, 0, 0] = False
    out = noisy_linear_imputation(image, removed, noise=0.0)
    assert torch.allclose(out, image, atol=1e-6)


def test_convergence_warning_names_the_knob() -> None:
    sal = _smooth_map(48, 48, 0)[None]
    removed = road_removal_masks(sal, [0.95])[:, 0]
    with pytest.warns(ImputationConvergenceWarning, match="max_iter"):
        noisy_linear_imputation(torch.randn(1, 1, 48, 48), removed, noise=0.0, max_iter=1)


def test_removal_masks_vs_sort() -> None:
    sal = torch.randn(3, 7, 9)
    fractions = [0.05, 0.29, 0.5, 0.99]
    for order in ("morf", "lerf"):
        masks = road_removal_masks(sal, fractions, order)
        for b in range(3):
            values = sal[b].flatten()
            ranked = values.argsort(descending=order == "morf").tolist()
            for p, f in enumerate(fractions):
                k = int(63 * f * 100 / 100 + 1e-9)
                expected = torch.zeros(63, dtype=torch.bool)
                expected[ranked[:k]] = True
                assert torch.equal(masks[b, p].flatten(), expected)
    # 0.29 of 100 pixels is 29 (not 28 from 0.29 * 100 = 28.999...)
    assert int(road_removal_masks(torch.randn(1, 10, 10), [0.29])[0, 0].sum()) == 29
    # ties: lower row-major index first, in both orders
    flat = torch.zeros(1, 2, 2)
    assert road_removal_masks(flat, [0.5], "morf")[0, 0].flatten().tolist() == [1, 1, 0, 0]
    assert road_removal_masks(flat, [0.5], "lerf")[0, 0].flatten().tolist() == [1, 1, 0, 0]


def _linear_model(c: int, h: int, w: int, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, classes)).eval()


def test_curves_endpoints_and_interior_vs_loop() -> None:
    model = _linear_model(2, 6, 6)
    images, sal = torch.randn(3, 2, 6, 6), torch.randn(3, 6, 6)
    target = torch.tensor([0, 2, 1])
    fractions = [0.1, 0.5, 0.8]
    frac, curves = road_curves(model, images, sal, target, fractions, noise=0.0, chunk_size=5)
    assert torch.allclose(frac, torch.tensor([0.0, 0.1, 0.5, 0.8, 1.0]))
    with torch.no_grad():
        clean = target_probability(model(images), target)
        mean_image = images.mean((-2, -1), keepdim=True).expand_as(images)
        base = target_probability(model(mean_image), target)
        for order in ("morf", "lerf"):
            c = curves[order]
            assert torch.allclose(c[:, 0], clean, atol=1e-6)
            assert torch.allclose(c[:, -1], base, atol=1e-6)
            masks = road_removal_masks(sal, fractions, order)
            for p in range(len(fractions)):
                x = noisy_linear_imputation(images, masks[:, p], noise=0.0)
                assert torch.allclose(c[:, 1 + p], target_probability(model(x), target), atol=1e-5)
    # one chunk or many: same values without noise
    _, again = road_curves(model, images, sal, target, fractions, noise=0.0, chunk_size=64)
    assert torch.allclose(again["morf"], curves["morf"], atol=1e-6)


def test_confidence_normalized_curve_hand_case_and_undefined_rows() -> None:
    scores = torch.tensor([[0.9, 0.6, 0.5, 0.1], [0.3, 0.35, 0.2, 0.3], [0.5, 0.9, 0.0, 0.1]])
    out = confidence_normalized_curve(scores, scores[:, 0], scores[:, -1])
    assert torch.allclose(out[0], torch.tensor([1.0, 0.625, 0.5, 0.0]))
    assert bool(out[1].isnan().all())  # clean == baseline: undefined, as PAIR skips it
    assert torch.allclose(out[2], torch.tensor([1.0, 1.0, 0.0, 0.0]))  # clipped to [0, 1]


def test_srg_is_lerf_area_minus_morf_area() -> None:
    lerf, morf = torch.rand(4, 6), torch.rand(4, 6)
    frac = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
    expected = torch.tensor(
        [
            np.trapezoid(lerf[i].numpy(), frac.numpy())
            - np.trapezoid(morf[i].numpy(), frac.numpy())
            for i in range(4)
        ]
    )
    assert torch.allclose(symmetric_relevance_gain(lerf, morf, frac), expected, atol=1e-6)
    assert torch.allclose(
        symmetric_relevance_gain(lerf, morf), curve_auc(lerf) - curve_auc(morf), atol=1e-7
    )


def test_srg_of_random_maps_is_zero_in_expectation_and_of_true_evidence_positive() -> None:
    """A linear model's logit is the sum of its per-pixel contributions w_t ⊙ x: that map ranks
    the evidence exactly (SRG > 0); maps drawn independently of the image score 0 on average
    (within 4 standard errors over 64 images)."""
    h = w = 8
    model = _linear_model(1, h, w, classes=2, seed=3)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(64, 1, h, w, generator=g)
    with torch.no_grad():
        target = model(images).argmax(1)
        weight = model[1].weight.view(2, h, w)
    evidence = (weight[target] - weight[1 - target]) * images[:, 0]
    kwargs = {"fractions": [0.1, 0.3, 0.5, 0.7, 0.9], "noise": 0.0, "reduction": "none"}
    morf, lerf = road_auc(model, images, evidence, target, **kwargs)
    assert float((lerf - morf).mean()) > 0.1
    random_maps = torch.rand(64, h, w, generator=g)
    morf, lerf = road_auc(model, images, random_maps, target, **kwargs)
    srg = lerf - morf
    assert abs(float(srg.mean())) < 4 * float(srg.std()) / math.sqrt(64)


def test_road_auc_normalize_skips_undefined_images() -> None:
    model = _linear_model(1, 5, 5)
    images, sal = torch.randn(6, 1, 5, 5), torch.randn(6, 5, 5)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    morf, lerf = road_auc(
        model, images, sal, target, [0.2, 0.6], noise=0.0, normalize=True, reduction="none"
    )
    frac, curves = road_curves(model, images, sal, target, [0.2, 0.6], noise=0.0)
    clean, base = curves["morf"][:, 0], curves["morf"][:, -1]
    defined = clean > base
    assert torch.equal(~morf.isnan(), defined) and torch.equal(~lerf.isnan(), defined)
    ref = curve_auc(
        torch.nan_to_num(confidence_normalized_curve(curves["morf"], clean, base)), frac
    )
    assert torch.allclose(morf[defined], ref[defined], atol=1e-6)
    mean_morf, _ = road_auc(model, images, sal, target, [0.2, 0.6], noise=0.0, normalize=True)
    assert torch.allclose(mean_morf, morf[defined].mean(), atol=1e-6)


def _road_curves_4x4(
    saliency: torch.Tensor | None = None, targets: torch.Tensor | None = None, **kwargs
) -> object:
    """``road_curves`` on a valid 1x4x4 batch, with one argument swapped for a bad one."""
    return road_curves(
        _linear_model(1, 4, 4),
        torch.rand(1, 1, 4, 4),
        torch.rand(1, 4, 4) if saliency is None else saliency,
        torch.tensor([0]) if targets is None else targets,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: noisy_linear_imputation(
                torch.rand(1, 1, 2, 5), torch.zeros(1, 2, 5, dtype=torch.bool)
            ),
            "3x3",
        ),
        (
            lambda: noisy_linear_imputation(
                torch.full((1, 1, 4, 4), float("nan")), torch.zeros(1, 4, 4, dtype=torch.bool)
            ),
            "finite",
        ),
        (
            lambda: noisy_linear_imputation(
                torch.rand(1, 1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool)
            ),
            "at least one pixel",
        ),
        (
            lambda: noisy_linear_imputation(torch.rand(1, 1, 4, 4), torch.zeros(1, 4, 4)),
            "bool tensor",
        ),
        (
            lambda: noisy_linear_imputation(
                torch.rand(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool), noise=-1.0
            ),
            "noise",
        ),
        (lambda: road_removal_masks(torch.full((1, 4, 4), float("nan"))), "finite"),
        (lambda: road_removal_masks(torch.rand(1, 4, 4), [0.0, 0.5]), r"\(0, 1\)"),
        (lambda: road_removal_masks(torch.rand(1, 4, 4), [0.5, 1.0]), r"\(0, 1\)"),
        (lambda: road_removal_masks(torch.rand(1, 4, 4), [0.5, 0.2]), "increasing"),
        (lambda: road_removal_masks(torch.rand(1, 4, 4), [0.5], "random"), "order"),
        (lambda: road_curve_fractions([]), "non-empty"),
        (
            lambda: road_curves(
                _linear_model(1, 2, 2),
                torch.rand(1, 1, 2, 2),
                torch.rand(1, 2, 2),
                torch.tensor([0]),
            ),
            "3x3",
        ),
        (lambda: _road_curves_4x4(saliency=torch.full((1, 4, 4), float("nan"))), "finite"),
        (lambda: _road_curves_4x4(fractions=[1.5]), r"\(0, 1\)"),
        (lambda: _road_curves_4x4(orders="morf"), "orders"),
        (lambda: _road_curves_4x4(score="logit"), "score"),
        (lambda: _road_curves_4x4(targets=torch.tensor([5])), "target"),
        (
            lambda: confidence_normalized_curve(torch.rand(2, 4), torch.rand(3), torch.rand(2)),
            "clean",
        ),
        (lambda: symmetric_relevance_gain(torch.rand(2, 4), torch.rand(2, 5)), "same shape"),
    ],
)
def test_bad_input_raises_before_work(call, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ----------------------------------------------------------------------- Quantus (reference)


class _Recorder(nn.Module):
    """Passes inputs through and keeps every batch the reference feeds the model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("size", [16, 33])
def test_imputation_equals_quantus_rgb(size: int) -> None:
    """RGB images: our solve vs Quantus's ``noisy_linear_imputation`` (noise off), MoRF masks
    of a blob map and of a random map; max abs diff <= 1e-8 (float64 on both sides)."""
    pytest.importorskip("quantus")
    from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation

    image = torch.randn(1, 3, size, size, dtype=torch.float64)
    for sal in (_smooth_map(size, size, 5)[None], torch.rand(1, size, size, dtype=torch.float64)):
        order = np.argsort(-sal[0].numpy().ravel())
        for p in (1, 27, 50, 75, 99):
            k = int(size * size * p / 100)
            ref = quantus_imputation(arr=image[0].numpy(), indices=order[:k], noise=0.0)
            removed = road_removal_masks(sal, [p / 100])[:, 0]
            ours = noisy_linear_imputation(image, removed, noise=0.0, tol=1e-12, max_iter=500)
            np.testing.assert_allclose(ours[0].numpy(), ref, atol=1e-8, rtol=0)


def test_road_equals_quantus_road() -> None:
    """Quantus's whole ROAD (single-channel images; see the module docstring): the per-
    percentage accuracies equal ours exactly, MoRF on the maps and LeRF on the negated maps;
    the target probabilities on the images Quantus perturbs equal our probability curve to
    1e-5."""
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(0)
    b, h = 8, 14
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * h, 5)
    ).eval()
    images = torch.randn(b, 1, h, h)
    sal = torch.randn(b, h, h)
    with torch.no_grad():
        labels = net(images).argmax(1)
    labels[:2] = (labels[:2] + 1) % 5  # some wrong labels, so accuracies are not all 1
    percentages = [1, 8, 15, 29, 36, 50, 64, 71, 85, 99]
    fractions = [p / 100 for p in percentages]
    for order, a in (("morf", sal), ("lerf", -sal)):
        recorder = _Recorder(net).eval()
        metric = quantus.ROAD(
            percentages=percentages, noise=0.0, disable_warnings=True, display_progressbar=False
        )
        reference = metric(
            model=recorder,
            x_batch=images.numpy(),
            y_batch=labels.numpy(),
            a_batch=a[:, None].numpy(),
            device="cpu",
            channel_first=True,
        )
        _, ours = road_curves(
            net,
            images,
            sal,
            labels,
            fractions,
            orders=(order,),
            noise=0.0,
            score="correct",
            tol=1e-7,
        )
        np.testing.assert_array_equal(
            ours[order][:, 1:-1].mean(0).numpy(), np.array([reference[p] for p in percentages])
        )
        perturbed = [x for x in recorder.seen if x.shape[0] == b][-len(percentages) :]
        assert len(perturbed) == len(percentages)
        with torch.no_grad():
            quantus_probs = torch.stack(
                [target_probability(net(x.float()), labels) for x in perturbed], 1
            )
        _, ours = road_curves(
            net, images, sal, labels, fractions, orders=(order,), noise=0.0, tol=1e-7
        )
        assert float((ours[order][:, 1:-1] - quantus_probs).abs().max()) < 1e-5
