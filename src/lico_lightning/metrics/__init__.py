"""``torchmetrics.Metric`` classes (DDP-correct accumulators over the functional formulas)."""

from lico_lightning.metrics.interaction import (
    AreaBetweenInsertionDeletion,
    PFaithfulnessCorrelation,
    PointingGameRecognition,
)

__all__ = [
    "AreaBetweenInsertionDeletion",
    "PFaithfulnessCorrelation",
    "PointingGameRecognition",
]
