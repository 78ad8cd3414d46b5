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

from lico_lightning.explain.m2ib import M2IB, M2IBAttribution, M2IBSettings

__all__ += ["M2IB", "M2IBAttribution", "M2IBSettings"]
