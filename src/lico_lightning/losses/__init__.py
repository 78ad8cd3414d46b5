"""``nn.Module`` losses holding hyperparameters and learnable parts."""

from lico_lightning.losses.lico import ManifoldMatchingLoss, SinkhornOTLoss

__all__ = ["ManifoldMatchingLoss", "SinkhornOTLoss"]
