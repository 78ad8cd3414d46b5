"""Evaluation protocols: run explainers over data and accumulate :mod:`lico_lightning.metrics`.

The layer between the explainers and metrics below and the callbacks above:

* :class:`SaliencyEvaluation` / :func:`evaluate_saliency` — classifier saliency (LICO Table 1,
  Appendix B): insertion, deletion, overall, average drop, increase in confidence, pointing
  games, or any metric registered in :data:`~lico_lightning.metrics.SALIENCY_METRICS`;
* :class:`GroundingEvaluation` — phrase grounding of dual-encoder explainers (PGA, PGE, mPGE,
  their distractor variants, CID / CII, or any metric registered in
  :data:`~lico_lightning.metrics.GROUNDING_METRICS`);
* :func:`conditional_perturbation_curves` — the dual encoder's conditional insertion /
  deletion curves (it runs the encoder).

Both evaluations hand each metric the inputs it declares (``needs``) and keep per-sample
scores of the latest batch (``last_scores``) for the monitors' overlays.
"""

from lico_lightning.evaluation.grounding import (
    GroundingEvaluation,
    check_grounding_names,
    phrase_maps,
)
from lico_lightning.evaluation.perturbation import conditional_perturbation_curves
from lico_lightning.evaluation.saliency import (
    GROUND_TRUTH_INPUTS,
    MODEL_METRICS,
    SaliencyEvaluation,
    check_saliency_names,
    evaluate_saliency,
    metrics_needing,
    missing_ground_truth,
    parse_batch,
    parse_ground_truth,
)

__all__ = [
    "GROUND_TRUTH_INPUTS",
    "MODEL_METRICS",
    "GroundingEvaluation",
    "SaliencyEvaluation",
    "check_grounding_names",
    "check_saliency_names",
    "conditional_perturbation_curves",
    "evaluate_saliency",
    "metrics_needing",
    "missing_ground_truth",
    "parse_batch",
    "parse_ground_truth",
    "phrase_maps",
]
