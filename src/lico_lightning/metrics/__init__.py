"""``torchmetrics.Metric`` classes: the DDP-correct accumulators of the package, one per
:mod:`lico_lightning.functional` metric formula, in the file of the same name
(``functional/pointing.py`` ``pointing_game`` ↔ ``metrics/pointing.py`` ``PointingGame``).

:data:`SALIENCY_METRICS` and :data:`GROUNDING_METRICS` name the metrics the evaluations and
monitors run; each metric declares the inputs it ``needs`` (see :mod:`lico_lightning.metrics.base`).
"""

from lico_lightning.metrics.base import (
    GROUNDING_INPUTS,
    GROUNDING_METRICS,
    SALIENCY_INPUTS,
    SALIENCY_METRICS,
    SaliencyMetric,
    SaliencyMetricOptions,
    create_grounding_metric,
    create_saliency_metric,
    list_grounding_metrics,
    list_saliency_metrics,
    metric_needs,
)
from lico_lightning.metrics.confidence import (
    AverageDrop,
    ClassConfidence,
    IncreaseInConfidence,
    PairConfidenceDrop,
    PairConfidenceIncrease,
)
from lico_lightning.metrics.faithfulness import RetrievalFaithfulness
from lico_lightning.metrics.ground_truth import (
    GroupAccuracy,
    InterventionCorrectness,
    InterventionEffect,
    RelevanceRankAccuracy,
)
from lico_lightning.metrics.interaction_metrics import (
    AreaBetweenInsertionDeletion,
    PointingGameRecognition,
)
from lico_lightning.metrics.perturbation import (
    ConditionalDeletionAUC,
    ConditionalInsertionAUC,
    DeletionAUC,
    InsertionAUC,
    InsertionDeletionAUC,
)
from lico_lightning.metrics.pointing import EnergyPointingGame, PointingGame
from lico_lightning.metrics.rank import SpearmanCorrelation
from lico_lightning.metrics.retrieval import RetrievalRecallAtK
from lico_lightning.metrics.road import ROADAUC, SymmetricRelevanceGain

__all__ = [
    "GROUNDING_INPUTS",
    "GROUNDING_METRICS",
    "ROADAUC",
    "SALIENCY_INPUTS",
    "SALIENCY_METRICS",
    "AreaBetweenInsertionDeletion",
    "AverageDrop",
    "ClassConfidence",
    "ConditionalDeletionAUC",
    "ConditionalInsertionAUC",
    "DeletionAUC",
    "EnergyPointingGame",
    "GroupAccuracy",
    "IncreaseInConfidence",
    "InsertionAUC",
    "InsertionDeletionAUC",
    "InterventionCorrectness",
    "InterventionEffect",
    "PairConfidenceDrop",
    "PairConfidenceIncrease",
    "PointingGame",
    "PointingGameRecognition",
    "RelevanceRankAccuracy",
    "RetrievalFaithfulness",
    "RetrievalRecallAtK",
    "SaliencyMetric",
    "SaliencyMetricOptions",
    "SpearmanCorrelation",
    "SymmetricRelevanceGain",
    "create_grounding_metric",
    "create_saliency_metric",
    "list_grounding_metrics",
    "list_saliency_metrics",
    "metric_needs",
]
