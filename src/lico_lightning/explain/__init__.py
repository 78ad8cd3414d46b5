"""Explainers: saliency for classifiers and interaction attributions for dual encoders."""

from lico_lightning.explain.dual_encoder import (
    DualEncoder,
    ImageSpec,
    OpenCLIPDualEncoder,
    TextSpec,
)

__all__ = [
    "DualEncoder",
    "ImageSpec",
    "OpenCLIPDualEncoder",
    "TextSpec",
]
