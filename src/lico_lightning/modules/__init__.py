"""LightningModules."""

from lico_lightning.modules.lico_classifier import LICOClassifier, lico_cosine_lambda
from lico_lightning.modules.surrogate_distiller import SurrogateDistiller

__all__ = ["LICOClassifier", "SurrogateDistiller", "lico_cosine_lambda"]
