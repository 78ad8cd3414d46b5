"""LightningModules."""

from lico_lightning.modules.clip_finetuner import (
    CLIP_LOSSES,
    CLIPFineTuner,
    clip_param_groups,
    warmup_cosine_lambda,
)
from lico_lightning.modules.lico_classifier import LICOClassifier, lico_cosine_lambda
from lico_lightning.modules.surrogate_distiller import SurrogateDistiller, load_open_clip_weights

__all__ = [
    "CLIP_LOSSES",
    "CLIPFineTuner",
    "LICOClassifier",
    "SurrogateDistiller",
    "clip_param_groups",
    "lico_cosine_lambda",
    "load_open_clip_weights",
    "warmup_cosine_lambda",
]
