"""Pure torch math: no state, no Lightning import.

Metric formulas live in one file per job — ``perturbation`` (insertion / deletion curves and
their areas), ``confidence`` (drop / increase in confidence), ``pointing`` (pointing games),
``rank`` (Spearman's correlation), ``interaction_metrics`` (FIxLIP's AID and PGR),
``faithfulness`` and ``retrieval`` — and each has its torchmetrics classes in the file of the
same name in :mod:`lico_lightning.metrics` (``functional/pointing.py`` ``pointing_game`` ↔
``metrics/pointing.py`` ``PointingGame``). Import them from here.
"""

from lico_lightning.functional.banzhaf import (
    BanzhafInteractions,
    all_coalitions,
    approximate_game_values,
    banzhaf_kernel_weights,
    banzhaf_values_from_interactions,
    cross_modal_banzhaf_interactions,
    exact_banzhaf_interactions,
    greedy_subsets,
    interaction_pairs,
    kron_normal_equations,
    model_agnostic_banzhaf_interactions,
    normal_equations,
    sample_coalitions,
    select_clique,
    solve_interactions,
    split_budget,
)
from lico_lightning.functional.cam import (
    draw_rise_parameters,
    grad_cam_plus_plus_weights,
    grad_cam_weights,
    rise_masks,
    upsample_saliency,
    weighted_activation_map,
)
from lico_lightning.functional.confidence import (
    average_drop,
    increase_in_confidence,
    normalize_saliency,
    pair_confidence_drop,
    pair_confidence_increase,
    target_probability,
)
from lico_lightning.functional.explanation_guided import (
    gradcam_mask_penalty,
    right_for_the_right_reasons_loss,
)
from lico_lightning.functional.faithfulness import (
    blockwise_retrieval_faithfulness,
    retrieval_faithfulness,
)
from lico_lightning.functional.ground_truth import (
    group_accuracy,
    group_counts,
    intervention_correctness,
    intervention_effect,
    reduce_group_accuracy,
    relevance_rank_accuracy,
)
from lico_lightning.functional.indexing import first_occurrences
from lico_lightning.functional.interaction import integration_points, token_interactions
from lico_lightning.functional.interaction_metrics import (
    area_between_insertion_deletion,
    pointing_game_recognition,
)
from lico_lightning.functional.lico import (
    SinkhornConvergenceWarning,
    manifold_matching_loss,
    sinkhorn_ot_loss,
)
from lico_lightning.functional.m2ib import bottleneck_capacity, gaussian_bottleneck, m2ib_objective
from lico_lightning.functional.perturbation import (
    DEFAULT_BLUR_KERNEL_SIZE,
    DEFAULT_BLUR_SIGMA,
    DEFAULT_STEP_FRACTION,
    blur_images,
    curve_auc,
    deletion_auc,
    insertion_auc,
    insertion_deletion_auc,
    insertion_deletion_curves,
    perturbation_curve,
    perturbation_keep_masks,
)
from lico_lightning.functional.pointing import (
    DEFAULT_TOLERANCE,
    box_to_mask,
    energy_pointing_game,
    pointing_game,
)
from lico_lightning.functional.rank import spearman_correlation
from lico_lightning.functional.retrieval import retrieval_ranks, retrieval_recall_at_k
from lico_lightning.functional.road import (
    DEFAULT_ROAD_FRACTIONS,
    DEFAULT_ROAD_NOISE,
    ROAD_NEIGHBOUR_WEIGHTS,
    ImputationConvergenceWarning,
    confidence_normalized_curve,
    noisy_linear_imputation,
    road_auc,
    road_curve_fractions,
    road_curves,
    road_removal_masks,
    symmetric_relevance_gain,
)
from lico_lightning.functional.splice import (
    splice_decompose,
    splice_penalty_for_sparsity,
    splice_reconstruct,
)
from lico_lightning.functional.statistics import wilson_interval
from lico_lightning.functional.surrogate import (
    concept_contributions,
    in_batch_similarity_kl,
    log_mean_exp,
    moving_average_kl_objective,
    update_log_moving_average,
)

__all__ = [
    "DEFAULT_BLUR_KERNEL_SIZE",
    "DEFAULT_BLUR_SIGMA",
    "DEFAULT_ROAD_FRACTIONS",
    "DEFAULT_ROAD_NOISE",
    "DEFAULT_STEP_FRACTION",
    "DEFAULT_TOLERANCE",
    "ROAD_NEIGHBOUR_WEIGHTS",
    "BanzhafInteractions",
    "ImputationConvergenceWarning",
    "SinkhornConvergenceWarning",
    "all_coalitions",
    "approximate_game_values",
    "area_between_insertion_deletion",
    "average_drop",
    "banzhaf_kernel_weights",
    "banzhaf_values_from_interactions",
    "blockwise_retrieval_faithfulness",
    "blur_images",
    "bottleneck_capacity",
    "box_to_mask",
    "concept_contributions",
    "confidence_normalized_curve",
    "cross_modal_banzhaf_interactions",
    "curve_auc",
    "deletion_auc",
    "draw_rise_parameters",
    "energy_pointing_game",
    "exact_banzhaf_interactions",
    "first_occurrences",
    "gaussian_bottleneck",
    "grad_cam_plus_plus_weights",
    "grad_cam_weights",
    "gradcam_mask_penalty",
    "greedy_subsets",
    "group_accuracy",
    "group_counts",
    "in_batch_similarity_kl",
    "increase_in_confidence",
    "insertion_auc",
    "insertion_deletion_auc",
    "insertion_deletion_curves",
    "integration_points",
    "interaction_pairs",
    "intervention_correctness",
    "intervention_effect",
    "kron_normal_equations",
    "log_mean_exp",
    "m2ib_objective",
    "manifold_matching_loss",
    "model_agnostic_banzhaf_interactions",
    "moving_average_kl_objective",
    "noisy_linear_imputation",
    "normal_equations",
    "normalize_saliency",
    "pair_confidence_drop",
    "pair_confidence_increase",
    "perturbation_curve",
    "perturbation_keep_masks",
    "pointing_game",
    "pointing_game_recognition",
    "reduce_group_accuracy",
    "relevance_rank_accuracy",
    "retrieval_faithfulness",
    "retrieval_ranks",
    "retrieval_recall_at_k",
    "right_for_the_right_reasons_loss",
    "rise_masks",
    "road_auc",
    "road_curve_fractions",
    "road_curves",
    "road_removal_masks",
    "sample_coalitions",
    "select_clique",
    "sinkhorn_ot_loss",
    "solve_interactions",
    "spearman_correlation",
    "splice_decompose",
    "splice_penalty_for_sparsity",
    "splice_reconstruct",
    "split_budget",
    "symmetric_relevance_gain",
    "target_probability",
    "token_interactions",
    "update_log_moving_average",
    "upsample_saliency",
    "weighted_activation_map",
    "wilson_interval",
]
