"""Explainers: saliency for classifiers and interaction attributions for dual encoders."""

from lico_lightning._safety import preserve_model_state
from lico_lightning.explain.base import (
    EXPLAINERS,
    Explainer,
    build_explainers,
    create_explainer,
    list_explainers,
    register_explainer,
)
from lico_lightning.explain.cam import GradCAM, GradCAMPlusPlus, ScoreCAM
from lico_lightning.explain.dual_encoder import DualEncoder, ImageSpec, TextSpec
from lico_lightning.explain.evaluation import (
    SALIENCY_METRICS,
    SaliencyEvaluation,
    SaliencyMetricOptions,
    evaluate_saliency,
    list_saliency_metrics,
    parse_batch,
)
from lico_lightning.explain.fixlip import FIxLIP, FIxLIPAttribution, FIxLIPGame
from lico_lightning.explain.grounding_evaluation import (
    GROUNDING_METRICS,
    GroundingEvaluation,
    list_grounding_metrics,
    phrase_maps,
)
from lico_lightning.explain.hooks import LayerCapture, ViTReshape, resolve_layer
from lico_lightning.explain.integrated_jacobians import IntegratedJacobians, InteractionCAM
from lico_lightning.explain.interaction import InteractionAttribution, TokenLayout
from lico_lightning.explain.itsm import ITSM
from lico_lightning.explain.m2ib import M2IB, M2IBAttribution, M2IBSettings
from lico_lightning.explain.open_clip_encoder import OpenCLIPDualEncoder
from lico_lightning.explain.pair import (
    PAIR_VIEWS,
    PairAttribution,
    PairExplainer,
    as_dual_encoder,
    create_pair_explainer,
    list_pair_explainers,
    register_pair_explainer,
)
from lico_lightning.explain.perturbation import conditional_perturbation_curves
from lico_lightning.explain.rise import RISE
from lico_lightning.explain.sanity import (
    ParameterRandomizationResult,
    parameter_randomization,
    randomizable_layers,
)

__all__ = [
    "EXPLAINERS",
    "GROUNDING_METRICS",
    "ITSM",
    "M2IB",
    "PAIR_VIEWS",
    "RISE",
    "SALIENCY_METRICS",
    "DualEncoder",
    "Explainer",
    "FIxLIP",
    "FIxLIPAttribution",
    "FIxLIPGame",
    "GradCAM",
    "GradCAMPlusPlus",
    "GroundingEvaluation",
    "ImageSpec",
    "IntegratedJacobians",
    "InteractionAttribution",
    "InteractionCAM",
    "LayerCapture",
    "M2IBAttribution",
    "M2IBSettings",
    "OpenCLIPDualEncoder",
    "PairAttribution",
    "PairExplainer",
    "ParameterRandomizationResult",
    "SaliencyEvaluation",
    "SaliencyMetricOptions",
    "ScoreCAM",
    "TextSpec",
    "TokenLayout",
    "ViTReshape",
    "as_dual_encoder",
    "build_explainers",
    "conditional_perturbation_curves",
    "create_explainer",
    "create_pair_explainer",
    "evaluate_saliency",
    "list_explainers",
    "list_grounding_metrics",
    "list_pair_explainers",
    "list_saliency_metrics",
    "parameter_randomization",
    "parse_batch",
    "phrase_maps",
    "preserve_model_state",
    "randomizable_layers",
    "register_explainer",
    "register_pair_explainer",
    "resolve_layer",
]
