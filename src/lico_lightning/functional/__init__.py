"""Pure torch math: no state, no Lightning import."""

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
from lico_lightning.functional.interaction_metrics import (
    area_between_insertion_deletion,
    p_faithfulness_correlation,
    pointing_game_recognition,
    rank_data,
)

__all__ = [
    "BanzhafInteractions",
    "all_coalitions",
    "approximate_game_values",
    "area_between_insertion_deletion",
    "banzhaf_kernel_weights",
    "banzhaf_values_from_interactions",
    "cross_modal_banzhaf_interactions",
    "exact_banzhaf_interactions",
    "greedy_subsets",
    "interaction_pairs",
    "kron_normal_equations",
    "model_agnostic_banzhaf_interactions",
    "normal_equations",
    "p_faithfulness_correlation",
    "pointing_game_recognition",
    "rank_data",
    "sample_coalitions",
    "select_clique",
    "solve_interactions",
    "split_budget",
]
