"""Pure torch math: no state, no Lightning import."""

from lico_lightning.functional.m2ib import bottleneck_capacity, gaussian_bottleneck, m2ib_objective

__all__ = ["bottleneck_capacity", "gaussian_bottleneck", "m2ib_objective"]
