"""``nn.Module`` losses holding hyperparameters and learnable parts."""

from lico_lightning.losses.explanation_guided import (
    EXPLANATION_LOSSES,
    ExplanationLoss,
    GradCAMMaskLoss,
    RightForTheRightReasonsLoss,
    create_explanation_loss,
    list_explanation_losses,
)
from lico_lightning.losses.lico import ManifoldMatchingLoss, SinkhornOTLoss
from lico_lightning.losses.surrogate import (
    MovingAverageEstimator,
    SurrogateDistillationLoss,
    SurrogateLossOutput,
)

__all__ = [
    "EXPLANATION_LOSSES",
    "ExplanationLoss",
    "GradCAMMaskLoss",
    "ManifoldMatchingLoss",
    "MovingAverageEstimator",
    "RightForTheRightReasonsLoss",
    "SinkhornOTLoss",
    "SurrogateDistillationLoss",
    "SurrogateLossOutput",
    "create_explanation_loss",
    "list_explanation_losses",
]
