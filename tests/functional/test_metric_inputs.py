"""Every metric function and class rejects non-finite inputs with a clear error before any work
(issue 11, item 2), and curve_auc checks its fractions (item 3)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lico_lightning import functional as F
from lico_lightning import metrics as M


class _CountingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 3))
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.net(x)


def _batch() -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 6, 6, generator=g)
    sal = torch.rand(2, 6, 6, generator=g)
    boxes = [torch.tensor([[0.0, 0.0, 3.0, 3.0]]), torch.tensor([[1.0, 1.0, 6.0, 6.0]])]
    return images, sal, torch.tensor([0, 2]), boxes


MODEL_FUNCTIONS = {
    "insertion_auc": lambda m, x, s, t: F.insertion_auc(m, x, s, t, step_fraction=0.5),
    "deletion_auc": lambda m, x, s, t: F.deletion_auc(m, x, s, t, step_fraction=0.5),
    "insertion_deletion_auc": lambda m, x, s, t: F.insertion_deletion_auc(
        m, x, s, t, step_fraction=0.5
    ),
    "perturbation_curve": lambda m, x, s, t: F.perturbation_curve(m, x, s, t, step_fraction=0.5),
    "average_drop": F.average_drop,
    "increase_in_confidence": F.increase_in_confidence,
    "InsertionAUC": lambda m, x, s, t: M.InsertionAUC(step_fraction=0.5).update(m, x, s, t),
    "DeletionAUC": lambda m, x, s, t: M.DeletionAUC(step_fraction=0.5).update(m, x, s, t),
    "InsertionDeletionAUC": lambda m, x, s, t: M.InsertionDeletionAUC(step_fraction=0.5).update(
        m, x, s, t
    ),
    "AverageDrop": lambda m, x, s, t: M.AverageDrop().update(m, x, s, t),
    "IncreaseInConfidence": lambda m, x, s, t: M.IncreaseInConfidence().update(m, x, s, t),
}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["images", "saliency"])
@pytest.mark.parametrize("name", sorted(MODEL_FUNCTIONS))
def test_model_metrics_reject_non_finite_images_and_maps_before_running_the_model(
    name: str, where: str, bad: float
) -> None:
    model = _CountingNet()
    images, sal, target, _ = _batch()
    (images if where == "images" else sal)[1, 0, 2] = bad
    with pytest.raises(ValueError, match=f"Expected `{where}` to be finite"):
        MODEL_FUNCTIONS[name](model, images, sal, target)
    assert model.calls == 0  # before any work


def test_non_finite_logits_are_an_error_not_a_nan_average_drop() -> None:
    images, sal, target, _ = _batch()
    nan_model = lambda x: torch.full((x.shape[0], 3), float("nan"))  # noqa: E731
    with pytest.raises(ValueError, match="finite logits"):
        F.average_drop(nan_model, images, sal, target)
    with pytest.raises(ValueError, match="finite logits"):
        F.insertion_auc(nan_model, images, sal, target, step_fraction=0.5)


MAP_FUNCTIONS = {
    "pointing_game": lambda s, b: F.pointing_game(s, b),
    "energy_pointing_game": lambda s, b: F.energy_pointing_game(s, b),
    "PointingGame": lambda s, b: M.PointingGame().update(s, b),
    "EnergyPointingGame": lambda s, b: M.EnergyPointingGame().update(s, b),
    "normalize_saliency": lambda s, b: F.normalize_saliency(s),
}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", sorted(MAP_FUNCTIONS))
def test_map_metrics_reject_non_finite_maps(name: str, bad: float) -> None:
    _, sal, _, boxes = _batch()
    sal[0, 1, 1] = bad
    with pytest.raises(ValueError, match="Expected `saliency` to be finite"):
        MAP_FUNCTIONS[name](sal, boxes)


def test_normalize_saliency_does_not_turn_an_all_nan_map_into_zeros() -> None:
    with pytest.raises(ValueError, match="finite"):
        F.normalize_saliency(torch.full((1, 3, 3), float("nan")))


SCORE_FUNCTIONS = {
    "curve_auc": lambda a, b: F.curve_auc(a),
    "pair_confidence_drop": F.pair_confidence_drop,
    "pair_confidence_increase": F.pair_confidence_increase,
    "spearman_correlation": F.spearman_correlation,
    "area_between_insertion_deletion": F.area_between_insertion_deletion,
    "ConditionalInsertionAUC": lambda a, b: M.ConditionalInsertionAUC().update(a[None]),
    "PairConfidenceDrop": lambda a, b: M.PairConfidenceDrop().update(a, b),
    "SpearmanCorrelation": lambda a, b: M.SpearmanCorrelation().update(a, b),
    "AreaBetweenInsertionDeletion": lambda a, b: M.AreaBetweenInsertionDeletion().update(a, b),
}


@pytest.mark.parametrize("name", sorted(SCORE_FUNCTIONS))
def test_score_metrics_reject_non_finite_scores(name: str) -> None:
    a, b = torch.tensor([0.0, 0.3, 0.5, 1.0]), torch.tensor([0.0, 0.2, 0.7, 1.0])
    a[1] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        SCORE_FUNCTIONS[name](a, b)


def test_pointing_game_recognition_rejects_non_finite_interactions() -> None:
    e = torch.tensor([[2.0, float("inf")], [-1.0, 1.0]])
    with pytest.raises(ValueError, match="finite"):
        F.pointing_game_recognition(e, torch.eye(2, dtype=torch.bool))


def test_curve_auc_checks_its_fractions_early() -> None:
    # issue 11: curve_auc(linspace(0, 1, 5), rand(4)) crashed inside torch
    with pytest.raises(ValueError, match=r"Expected `fractions` of shape \(5,\)"):
        F.curve_auc(torch.linspace(0, 1, 5), torch.rand(4))
    with pytest.raises(ValueError, match="increasing from 0 to 1"):
        F.curve_auc(torch.rand(2, 3), torch.tensor([0.0, 0.7, 0.5]))
    with pytest.raises(ValueError, match="increasing from 0 to 1"):
        F.curve_auc(torch.rand(2, 3), torch.tensor([0.0, 0.5, 2.0]))
    with pytest.raises(ValueError, match="at least 2 points"):
        F.curve_auc(torch.rand(3, 1))
    with pytest.raises(TypeError, match="floating"):
        F.curve_auc(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="finite"):
        F.curve_auc(torch.rand(1, 3), torch.tensor([0.0, float("nan"), 1.0]))
