"""Explainers, in one flat namespace (as ``captum.attr``).

Two families, each implemented in its own private room:

* classifier saliency (``_saliency``): :class:`Explainer` and its registry
  (:data:`EXPLAINERS`), Grad-CAM, Grad-CAM++, Score-CAM, RISE, layer hooks and the
  parameter-randomisation sanity check;
* dual-encoder pairs (``_pair``): :class:`PairExplainer` / :class:`PairAttribution` and their
  registry (:data:`PAIR_EXPLAINERS`), the :class:`DualEncoder` protocol with its open_clip
  adapter, integrated Jacobians / InteractionCAM, ITSM, M2IB and FIxLIP.

Import everything from here; the evaluation protocols that score explainers are in
:mod:`lico_lightning.evaluation`.
"""

from lico_lightning._safety import preserve_model_state
from lico_lightning.explain._pair.base import (
    PAIR_EXPLAINERS,
    PAIR_VIEWS,
    PairAttribution,
    PairExplainer,
    check_token_spans,
    create_pair_explainer,
    list_pair_explainers,
    register_pair_explainer,
)
from lico_lightning.explain._pair.dual_encoder import DualEncoder, ImageSpec, TextSpec
from lico_lightning.explain._pair.fixlip import FIxLIP, FIxLIPAttribution, FIxLIPGame
from lico_lightning.explain._pair.integrated_jacobians import IntegratedJacobians, InteractionCAM
from lico_lightning.explain._pair.interaction import InteractionAttribution, TokenLayout
from lico_lightning.explain._pair.itsm import ITSM
from lico_lightning.explain._pair.m2ib import M2IB, M2IBAttribution, M2IBSettings
from lico_lightning.explain._pair.open_clip_encoder import OpenCLIPDualEncoder, as_dual_encoder
from lico_lightning.explain._saliency.base import (
    EXPLAINERS,
    Explainer,
    build_explainers,
    check_explainer_options,
    create_explainer,
    list_explainers,
    register_explainer,
)
from lico_lightning.explain._saliency.cam import GradCAM, GradCAMPlusPlus, ScoreCAM
from lico_lightning.explain._saliency.hooks import LayerCapture, ViTReshape, resolve_layer
from lico_lightning.explain._saliency.rise import RISE
from lico_lightning.explain._saliency.sanity import (
    ParameterRandomizationResult,
    parameter_randomization,
    randomizable_layers,
)

__all__ = [
    "EXPLAINERS",
    "ITSM",
    "M2IB",
    "PAIR_EXPLAINERS",
    "PAIR_VIEWS",
    "RISE",
    "DualEncoder",
    "Explainer",
    "FIxLIP",
    "FIxLIPAttribution",
    "FIxLIPGame",
    "GradCAM",
    "GradCAMPlusPlus",
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
    "ScoreCAM",
    "TextSpec",
    "TokenLayout",
    "ViTReshape",
    "as_dual_encoder",
    "build_explainers",
    "check_explainer_options",
    "check_token_spans",
    "create_explainer",
    "create_pair_explainer",
    "list_explainers",
    "list_pair_explainers",
    "parameter_randomization",
    "preserve_model_state",
    "randomizable_layers",
    "register_explainer",
    "register_pair_explainer",
    "resolve_layer",
]
