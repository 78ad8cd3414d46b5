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
    "Explainer",
    "GradCAM",
    "GradCAMPlusPlus",
    "LayerCapture",
    "ParameterRandomizationResult",
    "ScoreCAM",
    "ViTReshape",
    "create_explainer",
    "list_explainers",
    "parameter_randomization",
    "preserve_model_state",
    "randomizable_layers",
    "register_explainer",
    "resolve_layer",
]
