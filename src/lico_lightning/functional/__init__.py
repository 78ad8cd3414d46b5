"""Pure torch math: no state, no Lightning import."""

from lico_lightning.functional.grounding import (
    box_to_mask,
    confidence_drop,
    confidence_increase,
    insertion_deletion_auc,
    perturbation_keep_masks,
    pointing_game_accuracy,
    pointing_game_energy,
)
from lico_lightning.functional.interaction import integration_points, token_interactions
from lico_lightning.functional.lico import (
    SinkhornConvergenceWarning,
    manifold_matching_loss,
    sinkhorn_ot_loss,
)
from lico_lightning.functional.m2ib import bottleneck_capacity, gaussian_bottleneck, m2ib_objective

__all__ = [
    "SinkhornConvergenceWarning",
    "bottleneck_capacity",
    "box_to_mask",
    "confidence_drop",
    "confidence_increase",
    "gaussian_bottleneck",
    "insertion_deletion_auc",
    "integration_points",
    "m2ib_objective",
    "manifold_matching_loss",
    "perturbation_keep_masks",
    "pointing_game_accuracy",
    "pointing_game_energy",
    "sinkhorn_ot_loss",
    "token_interactions",
]
