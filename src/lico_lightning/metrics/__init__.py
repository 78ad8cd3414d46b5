"""``torchmetrics.Metric`` classes: the DDP-correct accumulators of the package, one per
:mod:`lico_lightning.functional` metric formula."""

from lico_lightning.metrics.faithfulness import RetrievalFaithfulness
from lico_lightning.metrics.grounding import (
    ConditionalDeletionAUC,
    ConditionalInsertionAUC,
    PairConfidenceDrop,
    PairConfidenceIncrease,
)
from lico_lightning.metrics.interaction import (
    AreaBetweenInsertionDeletion,
    PointingGameRecognition,
    SpearmanCorrelation,
)
from lico_lightning.metrics.retrieval import RetrievalRecallAtK
from lico_lightning.metrics.road import ROADAUC, SymmetricRelevanceGain
from lico_lightning.metrics.saliency import (
    SALIENCY_METRICS,
    AverageDrop,
    DeletionAUC,
    EnergyPointingGame,
    IncreaseInConfidence,
    InsertionAUC,
    InsertionDeletionAUC,
    PointingGame,
    SaliencyMetric,
    SaliencyMetricOptions,
    create_saliency_metric,
    list_saliency_metrics,
)

__all__ = [
    "ROADAUC",
    "SALIENCY_METRICS",
    "AreaBetweenInsertionDeletion",
    "AverageDrop",
    "ConditionalDeletionAUC",
    "ConditionalInsertionAUC",
    "DeletionAUC",
    "EnergyPointingGame",
    "IncreaseInConfidence",
    "InsertionAUC",
    "InsertionDeletionAUC",
    "PairConfidenceDrop",
    "PairConfidenceIncrease",
    "PointingGame",
    "PointingGameRecognition",
    "RetrievalFaithfulness",
    "RetrievalRecallAtK",
    "SaliencyMetric",
    "SaliencyMetricOptions",
    "SpearmanCorrelation",
    "SymmetricRelevanceGain",
    "create_saliency_metric",
    "list_saliency_metrics",
]
