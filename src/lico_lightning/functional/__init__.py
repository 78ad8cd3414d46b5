"""Pure torch math: no state, no Lightning import."""

from lico_lightning.functional.lico import (
    SinkhornConvergenceWarning,
    manifold_matching_loss,
    sinkhorn_ot_loss,
)

__all__ = [
    "SinkhornConvergenceWarning",
    "manifold_matching_loss",
    "sinkhorn_ot_loss",
]

# --- saliency metrics and CAM algebra (issue 3) ---
from lico_lightning.functional.cam import (
    draw_rise_parameters,
    grad_cam_plus_plus_weights,
    grad_cam_weights,
    rise_masks,
    upsample_saliency,
    weighted_activation_map,
)
from lico_lightning.functional.saliency import (
    average_drop,
    blur_images,
    confidence_change,
    curve_auc,
    deletion_auc,
    energy_pointing_game,
    increase_in_confidence,
    insertion_auc,
    insertion_deletion_curves,
    normalize_saliency,
    perturbation_curve,
    pointing_game,
    spearman_rank_correlation,
)

__all__ += [
    "average_drop",
    "blur_images",
    "confidence_change",
    "curve_auc",
    "deletion_auc",
    "draw_rise_parameters",
    "energy_pointing_game",
    "grad_cam_plus_plus_weights",
    "grad_cam_weights",
    "increase_in_confidence",
    "insertion_auc",
    "insertion_deletion_curves",
    "normalize_saliency",
    "perturbation_curve",
    "pointing_game",
    "rise_masks",
    "spearman_rank_correlation",
    "upsample_saliency",
    "weighted_activation_map",
]
