"""The accumulator behind every "mean of per-sample values" metric of the package."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import rank_zero_warn

#: What ``compute()`` of a metric returns with no sample: a float (returned with a warning;
#: an explicit NaN without one, for callers that report empty metrics themselves, e.g.
#: :class:`~lico_lightning.evaluation.SaliencyEvaluation`), ``"warn"`` (NaN with a warning:
#: the default of the metrics users build, so an empty metric never reads as a score of 0),
#: or ``None`` (raise).
ZeroDivision = float | Literal["warn"] | None


def _mean_of_sum(total: Tensor, count: Tensor, name: str, zero_division: ZeroDivision) -> Tensor:
    """``total / count``; with no sample: raise (``zero_division=None``), warn and return NaN
    (``"warn"``), or return ``zero_division`` (with a warning unless it is NaN)."""
    if int(count) == 0:
        if zero_division is None:
            raise ValueError(
                f"Expected at least one update before compute() of {name}, but got none."
            )
        if zero_division == "warn":
            rank_zero_warn(
                f"{name}: compute() found no accumulated sample (no update, or every sample "
                "was skipped); returning NaN."
            )
            zero_division = math.nan
        elif not math.isnan(zero_division):
            rank_zero_warn(
                f"{name}: no valid sample was accumulated (e.g. every image had no box); "
                f"returning {zero_division}."
            )
        return torch.tensor(zero_division, dtype=torch.float32, device=total.device)
    return (total / count).float()


def _standard_error_of_sums(total: Tensor, total_sq: Tensor, count: Tensor) -> Tensor:
    """Standard error of the mean from the sums: ``std(ddof=1) / sqrt(n)`` (NaN below 2)."""
    n = int(count)
    if n < 2:
        return torch.tensor(float("nan"), dtype=torch.float32, device=total.device)
    mean = total / n
    variance = ((total_sq - n * mean * mean) / (n - 1)).clamp(min=0.0)
    return (variance / n).sqrt().float()


class _MeanOfValues(Metric):
    """Mean of per-sample values: a float64 sum and a count, both summed across processes, so
    the value under DDP equals the mean over every sample seen by every rank. A float64 sum of
    squares (summed too) gives the mean's standard error over those samples
    (:meth:`standard_errors`).

    Subclasses call :meth:`_add` in ``update`` with the per-sample values of their functional
    formula. :meth:`compute` with nothing added raises, or, when the subclass passes a
    ``zero_division`` value, returns that value (see :data:`ZeroDivision`; metrics that skip
    samples, e.g. images without boxes).
    """

    full_state_update = False

    total: Tensor
    total_sq: Tensor
    count: Tensor

    def __init__(self, zero_division: ZeroDivision = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not (zero_division is None or zero_division == "warn") and (
            isinstance(zero_division, bool) or not isinstance(zero_division, (int, float))
        ):
            raise TypeError(
                "Expected `zero_division` to be a float, 'warn' or None, "
                f"but got {zero_division!r}."
            )
        self.zero_division: ZeroDivision = zero_division
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "total_sq", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def _add(self, values: Tensor) -> None:
        values = values.detach().to(torch.float64)
        self.total += values.sum()
        self.total_sq += (values * values).sum()
        self.count += values.numel()

    def standard_errors(self) -> dict[str, Tensor]:
        """``{name: standard error}`` of the mean ``compute()`` reports, over every sample of
        every process: ``std(ddof=1) / sqrt(n)`` (NaN with fewer than 2 samples). The name is
        the first of the metric's ``outputs`` (``"value"`` without). Under DDP a collective,
        like ``compute()``: every rank calls it."""
        names = getattr(self, "outputs", ()) or ("value",)
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            se = _standard_error_of_sums(self.total, self.total_sq, self.count)
        return {names[0]: se}

    def compute(self) -> Tensor:
        return _mean_of_sum(self.total, self.count, type(self).__name__, self.zero_division)


class _MeanOfPairs(_MeanOfValues):
    """Means of two per-sample values ``a`` (``total``) and ``b`` (``second_total``) — e.g.
    insertion and deletion AUC, ROAD MoRF and LeRF — and the standard errors of both and of
    their difference (a float64 sum of ``(a - b)²`` as well; the difference's sign does not
    change its error). ``outputs`` names ``a``, ``b`` and the difference, in that order;
    subclasses call :meth:`_add_pair` and compute the difference in the direction they report.
    """

    second_total: Tensor
    second_sq: Tensor
    difference_sq: Tensor

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("second_total", "second_sq", "difference_sq"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def _add_pair(self, first: Tensor, second: Tensor) -> None:
        self._add(first)
        second = second.detach().to(torch.float64)
        self.second_total += second.sum()
        self.second_sq += (second * second).sum()
        difference = first.detach().to(torch.float64) - second
        self.difference_sq += (difference * difference).sum()

    def standard_errors(self) -> dict[str, Tensor]:
        """``{a, b, difference: standard error}`` of the three means (see
        :meth:`_MeanOfValues.standard_errors`)."""
        names: tuple[str, ...] = getattr(self, "outputs", ())  # set by each subclass
        first, second, difference = names
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            return {
                first: _standard_error_of_sums(self.total, self.total_sq, self.count),
                second: _standard_error_of_sums(self.second_total, self.second_sq, self.count),
                difference: _standard_error_of_sums(
                    self.total - self.second_total, self.difference_sq, self.count
                ),
            }
