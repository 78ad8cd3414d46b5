"""LightningModules."""

from lico_lightning.modules.lico_classifier import LICOClassifier, lico_cosine_lambda

__all__ = ["LICOClassifier", "lico_cosine_lambda"]
