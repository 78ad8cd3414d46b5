"""``torchmetrics.Metric`` classes (DDP-correct accumulators over the functional formulas)."""

from lico_lightning.metrics.faithfulness import RetrievalFaithfulness
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
from lico_lightning.metrics.retrieval import RetrievalRecallAtK
from lico_lightning.metrics.saliency import (
    AverageDrop,
    DeletionAUC,
    EnergyPointingGame,
    IncreaseInConfidence,
    InsertionAUC,
    InsertionDeletionAUC,
    PointingGame,
)

__all__ = [
    "AreaBetweenInsertionDeletion",
    "AverageDrop",
    "ConditionalDeletionAUC",
    "ConditionalInsertionAUC",
    "ConfidenceDrop",
    "ConfidenceIncrease",
    "DeletionAUC",
    "EnergyPointingGame",
    "IncreaseInConfidence",
    "InsertionAUC",
    "InsertionDeletionAUC",
    "PFaithfulnessCorrelation",
    "PointingGame",
    "PointingGameAccuracy",
    "PointingGameEnergy",
    "PointingGameRecognition",
    "RetrievalFaithfulness",
    "RetrievalRecallAtK",
]
