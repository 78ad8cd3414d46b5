"""Explainers: saliency for classifiers and interaction attributions for dual encoders."""

from lico_lightning.explain.dual_encoder import (
    DualEncoder,
    ImageSpec,
    OpenCLIPDualEncoder,
    TextSpec,
)
from lico_lightning.explain.fixlip import FIxLIP, FIxLIPAttribution, FIxLIPGame

__all__ = [
    "DualEncoder",
    "FIxLIP",
    "FIxLIPAttribution",
    "FIxLIPGame",
    "ImageSpec",
    "OpenCLIPDualEncoder",
    "TextSpec",
]
