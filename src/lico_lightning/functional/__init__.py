"""Pure torch math: no state, no Lightning import."""

from lico_lightning.functional.lico import (
    SinkhornConvergenceWarning,
    manifold_matching_loss,
    sinkhorn_ot_loss,
)

__all__ = [
    "SinkhornConvergenceWarning",
    "manifold_matching_loss",
    "sinkhorn_ot_loss",
]
