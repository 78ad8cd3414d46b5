"""Parameter-randomisation sanity check: reproducible, original model untouched, schemes differ."""

from __future__ import annotations

import copy

import pytest
import torch
from scipy import stats
from torch import nn

from lico_lightning.explain import GradCAM, ScoreCAM, parameter_randomization, randomizable_layers
from lico_lightning.testing import tiny_cnn


def _net() -> nn.Module:
    return tiny_cnn(4)


def test_layers_are_listed_top_to_bottom():
    assert randomizable_layers(_net()) == ["7", "3", "1", "0"]


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_reproducible_and_original_untouched(mode):
    net = _net().train()
    state = copy.deepcopy(net.state_dict())
    images, target = torch.randn(3, 3, 12, 12), torch.tensor([0, 1, 3])
    rng = torch.get_rng_state()
    a = parameter_randomization(GradCAM(net, "4"), images, target, mode=mode, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    b = parameter_randomization(GradCAM(net, "4"), images, target, mode=mode, seed=3)
    c = parameter_randomization(GradCAM(net, "4"), images, target, mode=mode, seed=4)
    torch.testing.assert_close(a.correlation, b.correlation)
    assert not torch.allclose(a.randomized, c.randomized)
    assert net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert a.layers == ["7", "3", "1", "0"] and a.correlation.shape == (4, 3)
    for layer in range(4):  # correlations are Spearman's of the returned maps
        for i in range(3):
            ref = stats.spearmanr(
                a.original[i].flatten(), a.randomized[layer, i].flatten()
            ).statistic
            ref = 0.0 if ref != ref else ref  # constant map -> 0 by definition
            assert float(a.correlation[layer, i]) == pytest.approx(ref, abs=1e-5)
    assert set(a.as_dict()) == set(a.layers)


def test_cascading_keeps_and_independent_restores_randomised_layers():
    net = _net()
    images, target = torch.randn(2, 3, 12, 12), torch.tensor([2, 1])
    cas = parameter_randomization(GradCAM(net, "4"), images, target, mode="cascading", seed=0)
    ind = parameter_randomization(GradCAM(net, "4"), images, target, mode="independent", seed=0)
    # the first step randomises the same layer with the same seed in both schemes
    torch.testing.assert_close(cas.randomized[0], ind.randomized[0])

    # independent step 2 == only layer "3" randomised (seed 0 + 1) on a fresh copy
    twin = copy.deepcopy(net)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        twin[3].reset_parameters()
    torch.testing.assert_close(ind.randomized[1], GradCAM(twin, "4").attribute(images, target))
    # cascading step 2 == layers "7" (seed 0) and "3" (seed 1) randomised
    with torch.random.fork_rng():
        torch.manual_seed(0)
        twin[7].reset_parameters()
    torch.testing.assert_close(cas.randomized[1], GradCAM(twin, "4").attribute(images, target))


def test_scorecam_sanity_check_runs_and_errors():
    net = _net()
    images, target = torch.randn(1, 3, 8, 8), torch.tensor([0])
    res = parameter_randomization(ScoreCAM(net, "4"), images, target, layers=["3", "0"])
    assert res.layers == ["3", "0"] and torch.isfinite(res.correlation).all()
    with pytest.raises(ValueError, match="mode"):
        parameter_randomization(GradCAM(net, "4"), images, target, mode="random")
    with pytest.raises(ValueError, match="submodule"):
        parameter_randomization(GradCAM(net, "4"), images, target, layers=["99"])
