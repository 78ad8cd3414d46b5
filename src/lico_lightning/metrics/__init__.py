"""``torchmetrics.Metric`` classes (DDP-correct accumulators over the functional formulas)."""

from lico_lightning.metrics.grounding import (
    ConditionalDeletionAUC,
    ConditionalInsertionAUC,
    ConfidenceDrop,
    ConfidenceIncrease,
    PointingGameAccuracy,
    PointingGameEnergy,
)
from lico_lightning.metrics.interaction import (
    AreaBetweenInsertionDeletion,
    PFaithfulnessCorrelation,
    PointingGameRecognition,
)

__all__ = [
    "AreaBetweenInsertionDeletion",
    "ConditionalDeletionAUC",
    "ConditionalInsertionAUC",
    "ConfidenceDrop",
    "ConfidenceIncrease",
    "PFaithfulnessCorrelation",
    "PointingGameAccuracy",
    "PointingGameEnergy",
    "PointingGameRecognition",
]

# --- saliency quality metrics (issue 3) ---
from lico_lightning.metrics.saliency import (
    AverageDrop,
    DeletionAUC,
    EnergyPointingGame,
    IncreaseInConfidence,
    InsertionAUC,
    InsertionDeletionAUC,
    PointingGame,
)

__all__ += [
    "AverageDrop",
    "DeletionAUC",
    "EnergyPointingGame",
    "IncreaseInConfidence",
    "InsertionAUC",
    "InsertionDeletionAUC",
    "PointingGame",
]
