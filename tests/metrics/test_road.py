"""ROAD metric classes vs their functions, safety of the model's flags and of the global RNG."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lico_lightning.functional import road_auc, road_curves, symmetric_relevance_gain
from lico_lightning.metrics import ROADAUC, SymmetricRelevanceGain


def _model() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Dropout(0.5), nn.Flatten(), nn.Linear(3 * 36, 4)
    )


def _batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(n, 2, 6, 6, generator=g),
            torch.rand(n, 6, 6, generator=g),
            torch.randint(0, 4, (n,), generator=g),
        )
        for n in (3, 2)
    ]


@pytest.mark.parametrize("normalize", [False, True])
def test_classes_equal_functions_over_batches(normalize: bool) -> None:
    model = _model().eval()
    fractions = (0.2, 0.5, 0.8)
    auc = ROADAUC(fractions=fractions, normalize=normalize, seed=7)
    srg = SymmetricRelevanceGain(fractions=fractions, normalize=normalize, seed=7)
    gen = torch.Generator().manual_seed(7)
    gen_curves = torch.Generator().manual_seed(7)
    morfs, lerfs, gains = [], [], []
    for images, sal, target in _batches():
        auc.update(model, images, sal, target)
        srg.update(model, images, sal, target)
        morf, lerf = road_auc(
            model,
            images,
            sal,
            target,
            fractions,
            generator=gen,
            normalize=normalize,
            reduction="none",
        )
        morfs.append(morf)
        lerfs.append(lerf)
        frac, curves = road_curves(model, images, sal, target, fractions, generator=gen_curves)
        gains.append(symmetric_relevance_gain(curves["lerf"], curves["morf"], frac))
    morf, lerf = torch.cat(morfs), torch.cat(lerfs)
    valid = ~morf.isnan()
    out = auc.compute()
    assert torch.allclose(out["morf"], morf[valid].mean(), atol=1e-6)
    assert torch.allclose(out["lerf"], lerf[valid].mean(), atol=1e-6)
    assert torch.allclose(out["srg"], (lerf - morf)[valid].mean(), atol=1e-6)
    assert int(auc.skipped) == int((~valid).sum())
    assert torch.allclose(srg.compute(), (lerf - morf)[valid].mean(), atol=1e-6)
    if not normalize:
        assert torch.allclose(srg.compute(), torch.cat(gains).mean(), atol=1e-6)


def test_reset_reseeds_the_noise_and_global_rng_is_untouched() -> None:
    model = _model().eval()
    metric = ROADAUC(fractions=(0.3, 0.6))
    images, sal, target = _batches()[0]
    metric.update(model, images, sal, target)
    first = metric.compute()["morf"]
    metric.reset()
    state = torch.random.get_rng_state()
    metric.update(model, images, sal, target)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(metric.compute()["morf"], first)


def test_model_flags_are_restored() -> None:
    model = _model().train()
    model[0].weight.requires_grad_(False)
    images, sal, target = _batches()[0]
    for metric in (ROADAUC(fractions=(0.5,)), SymmetricRelevanceGain(fractions=(0.5,))):
        metric.update(model, images, sal, target)
        assert model.training and model[1].training
        assert not model[0].weight.requires_grad and model[0].bias.requires_grad


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        ROADAUC(fractions=(0.0, 0.5))
    with pytest.raises(ValueError, match="score"):
        SymmetricRelevanceGain(score="logit")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="normalize"):
        ROADAUC(normalize=1)  # type: ignore[arg-type]
