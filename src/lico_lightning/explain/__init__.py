"""Explainers: saliency for classifiers and interaction attributions for dual encoders."""

# --- saliency explainers for classifiers (issue 3) ---
from lico_lightning.explain.base import (
    EXPLAINERS,
    Explainer,
    create_explainer,
    list_explainers,
    register_explainer,
)
from lico_lightning.explain.cam import GradCAM, GradCAMPlusPlus, ScoreCAM
from lico_lightning.explain.evaluation import (
    SALIENCY_METRICS,
    SaliencyMetricOptions,
    compute_saliency_metrics,
    evaluate_saliency,
    list_saliency_metrics,
    parse_batch,
)
from lico_lightning.explain.hooks import (
    LayerCapture,
    ViTReshape,
    preserve_model_state,
    resolve_layer,
)
from lico_lightning.explain.rise import RISE
from lico_lightning.explain.sanity import (
    ParameterRandomizationResult,
    parameter_randomization,
    randomizable_layers,
)

__all__ = [
    "EXPLAINERS",
    "RISE",
    "SALIENCY_METRICS",
    "Explainer",
    "GradCAM",
    "GradCAMPlusPlus",
    "LayerCapture",
    "ParameterRandomizationResult",
    "SaliencyMetricOptions",
    "ScoreCAM",
    "ViTReshape",
    "compute_saliency_metrics",
    "create_explainer",
    "evaluate_saliency",
    "list_explainers",
    "list_saliency_metrics",
    "parameter_randomization",
    "parse_batch",
    "preserve_model_state",
    "randomizable_layers",
    "register_explainer",
    "resolve_layer",
]
