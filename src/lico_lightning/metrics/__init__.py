"""``torchmetrics.Metric`` classes (DDP-correct accumulators over the functional formulas)."""

from lico_lightning.metrics.grounding import (
    ConditionalDeletionAUC,
    ConditionalInsertionAUC,
    ConfidenceDrop,
    ConfidenceIncrease,
    PointingGameAccuracy,
    PointingGameEnergy,
)

__all__ = [
    "ConditionalDeletionAUC",
    "ConditionalInsertionAUC",
    "ConfidenceDrop",
    "ConfidenceIncrease",
    "PointingGameAccuracy",
    "PointingGameEnergy",
]
