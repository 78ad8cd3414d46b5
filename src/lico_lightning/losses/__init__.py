"""``nn.Module`` losses holding hyperparameters and learnable parts."""

from lico_lightning.losses.lico import ManifoldMatchingLoss, SinkhornOTLoss
from lico_lightning.losses.surrogate import (
    MovingAverageEstimator,
    SurrogateDistillationLoss,
    SurrogateLossOutput,
)

__all__ = [
    "ManifoldMatchingLoss",
    "MovingAverageEstimator",
    "SinkhornOTLoss",
    "SurrogateDistillationLoss",
    "SurrogateLossOutput",
]
