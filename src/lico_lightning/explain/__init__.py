"""Explainers: saliency for classifiers and interaction attributions for dual encoders."""

from lico_lightning.explain.dual_encoder import (
    DualEncoder,
    ImageSpec,
    OpenCLIPDualEncoder,
    TextSpec,
)
from lico_lightning.explain.fixlip import FIxLIP, FIxLIPAttribution, FIxLIPGame
from lico_lightning.explain.integrated_jacobians import IntegratedJacobians, InteractionCAM
from lico_lightning.explain.interaction import InteractionAttribution, TokenLayout
from lico_lightning.explain.itsm import ITSM
from lico_lightning.explain.m2ib import M2IB, M2IBAttribution, M2IBSettings
from lico_lightning.explain.perturbation import conditional_perturbation_curves

__all__ = [
    "ITSM",
    "M2IB",
    "DualEncoder",
    "FIxLIP",
    "FIxLIPAttribution",
    "FIxLIPGame",
    "ImageSpec",
    "IntegratedJacobians",
    "InteractionAttribution",
    "InteractionCAM",
    "M2IBAttribution",
    "M2IBSettings",
    "OpenCLIPDualEncoder",
    "TextSpec",
    "TokenLayout",
    "conditional_perturbation_curves",
]
