"""``torchmetrics.Metric`` classes (DDP-correct accumulators over the functional formulas)."""

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

__all__ = [
    "AverageDrop",
    "DeletionAUC",
    "EnergyPointingGame",
    "IncreaseInConfidence",
    "InsertionAUC",
    "InsertionDeletionAUC",
    "PointingGame",
]
