"""The accumulator behind every "mean of per-sample values" metric of the package."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric


class _MeanOfValues(Metric):
    """Mean of per-sample values: a float64 sum and a count, both summed across processes, so
    the value under DDP equals the mean over every sample seen by every rank.

    Subclasses call :meth:`_add` in ``update`` with the per-sample values of their functional
    formula; :meth:`compute` raises if nothing was added (an empty mean has no value).
    """

    full_state_update = False

    total: Tensor
    count: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add(self, values: Tensor) -> None:
        self.total += values.detach().to(torch.float64).sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        if int(self.count) == 0:
            raise ValueError(
                f"Expected at least one update before compute() of {type(self).__name__}, but "
                "got none."
            )
        return (self.total / self.count).float()
