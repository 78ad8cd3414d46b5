"""The machinery every evaluation of several explainers shares (private to the package)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from typing_extensions import Self

from lico_lightning._registry import Registry
from lico_lightning.metrics import metric_needs

__all__: list[str] = []


def check_names(
    method_registry: Registry[Any],
    metric_registry: Registry[Any],
    methods: str | Sequence[str],
    metrics: str | Sequence[str],
) -> tuple[list[str], list[str]]:
    """Checked, de-duplicated method and metric names of an evaluation (at least one of each);
    unknown names raise ``ValueError`` listing the available ones."""
    method_names = method_registry.check_names(methods)
    metric_names = metric_registry.check_names(metrics)
    if not method_names or not metric_names:
        raise ValueError(
            f"Expected at least one method and one metric, but got {method_names} and "
            f"{metric_names}."
        )
    return method_names, metric_names


class Inputs:
    """What a batch offers its metrics: values by name, some computed on first use (e.g. the
    perturbation curves, which run the model) and then kept for the next metric."""

    def __init__(
        self, values: dict[str, Any], lazy: dict[str, Callable[[], Any]] | None = None
    ) -> None:
        self._values = dict(values)
        self._lazy = dict(lazy or {})

    def __contains__(self, name: object) -> bool:
        return name in self._values or name in self._lazy

    def __getitem__(self, name: str) -> Any:
        if name not in self._values:
            self._values[name] = self._lazy.pop(name)()
        return self._values[name]


class _MethodEvaluation:
    """The machinery every evaluation of several explainers shares: one ``MetricCollection`` per
    method (``collections``), a per-method failure count summed across processes, the first
    error text of each method, and a ``compute`` that every rank can call in the same order.

    Subclasses set ``methods``, ``metrics`` (the result keys of each collection),
    ``collections`` and call ``_init_failures()``; their ``update`` explains and calls
    :meth:`_fail` for a method that raised.
    """

    methods: list[str]
    metrics: list[str]
    collections: dict[str, MetricCollection]
    #: the input names this evaluation offers its metrics (``metrics.SALIENCY_INPUTS``, ...)
    inputs: frozenset[str]
    #: also report ``"{method}/{metric}_se"``: the standard error over the samples of each
    #: metric whose accumulator keeps one (a mean of per-sample values)
    with_standard_errors: bool = False

    def _init_failures(self) -> None:
        self._failures = _FailureCount(len(self.methods))
        self._errors: dict[str, str] = {}
        # what each member of the collections declares it needs, checked once
        self._needs = {
            name: metric_needs(name, metric, self.inputs)
            for collection in self.collections.values()
            for name, metric in collection.items()
        }

    def _update_metrics(self, method: str, inputs: Inputs) -> dict[str, dict[str, Tensor]]:
        """Update every metric of ``method`` with the inputs it declares (positionally, in
        its order); a metric whose input this batch lacks is skipped, not failed. Returns
        ``{member: its per-sample values}`` (``metric.last_values``, where it keeps them)."""
        values: dict[str, dict[str, Tensor]] = {}
        for name, metric in self.collections[method].items():
            needs = self._needs[name]
            if not all(n in inputs for n in needs):
                continue  # skipped, not failed
            metric.update(*(inputs[n] for n in needs))
            values[name] = dict(getattr(metric, "last_values", {}))
        return values

    def to(self, device: torch.device | str) -> Self:
        """Move every metric state to ``device``; returns ``self``."""
        for collection in self.collections.values():
            collection.to(device)
        self._failures.to(device)
        return self

    def _fail(self, method: str, err: BaseException) -> None:
        self._failures.failed[self.methods.index(method)] += 1
        self._errors.setdefault(method, f"{type(err).__name__}: {err}")

    def fail_all(self, err: BaseException) -> None:
        """Count every method as failed: the batch failed before any method ran."""
        for method in self.methods:
            self._fail(method, err)

    def compute(self) -> dict[str, float]:
        """``{"{method}/{metric}": value}`` over everything accumulated on every process.

        Under DDP every rank must call it: the failure counts are reduced first, so every rank
        leaves out the same methods and reaches the same collectives in the same order. Methods
        that failed on any rank are left out with one rank-zero warning naming each with its
        error; metrics without a valid sample (e.g. no image had a box) are left out.
        """
        failed = _compute_quietly(self._failures).reshape(-1)
        failed_methods = [m for i, m in enumerate(self.methods) if int(failed[i]) > 0]
        if failed_methods:
            errors = _gather_errors(self._errors)
            if _is_rank_zero():
                reasons = "; ".join(
                    f"{m!r} failed {int(failed[self.methods.index(m)])} time(s) "
                    f"({errors.get(m, 'an error on another rank')})"
                    for m in failed_methods
                )
                warnings.warn(
                    f"{type(self).__name__}: {reasons}; left out of the results.", stacklevel=2
                )
        results: dict[str, float] = {}
        for method in self.methods:
            if method in failed_methods:
                continue
            values = _compute_quietly(self.collections[method])
            for metric in self.metrics:
                value = float(values[metric])
                if value == value:  # NaN: no valid sample
                    results[f"{method}/{metric}"] = value
            if self.with_standard_errors:
                results.update(self._standard_errors(method, results))
        return results

    def _standard_errors(self, method: str, results: dict[str, float]) -> dict[str, float]:
        """``{"{method}/{metric}_se": value}`` of the members that keep one (a collective under
        DDP: every rank asks the same members in the same order)."""
        errors: dict[str, float] = {}
        for member_name, member in self.collections[method].items():
            standard_errors = getattr(member, "standard_errors", None)
            if not callable(standard_errors):
                continue
            for name, se in standard_errors().items():
                # a one-value member reports under its own (registered) name; a member of
                # several outputs keeps its mean in the first of them
                single = len(getattr(member, "outputs", ())) <= 1
                key = f"{method}/{member_name if single else name}"
                if key in results and float(se) == float(se):
                    errors[f"{key}_se"] = float(se)
        return errors

    def reset(self) -> None:
        """Forget every state (metric sums, failure counts, error texts)."""
        for collection in self.collections.values():
            collection.reset()
        self._failures.reset()
        self._errors = {}


class _FailureCount(Metric):
    """Per-method failure counts, summed across processes."""

    full_state_update = False
    failed: Tensor

    def __init__(self, num_methods: int) -> None:
        super().__init__()
        self.add_state("failed", torch.zeros(num_methods, dtype=torch.long), dist_reduce_fx="sum")

    def update(self) -> None:  # counts are added in place by SaliencyEvaluation
        pass

    def compute(self) -> Tensor:
        return self.failed.clone()


def _compute_quietly(metric: Metric | MetricCollection) -> Any:
    """``metric.compute()`` without torchmetrics' "compute before update" warning: a rank that
    saw no image (or no failure) still takes part in the state reduction."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*before the ``update`` method.*")
        return metric.compute()


def _is_rank_zero() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _gather_errors(errors: dict[str, str]) -> dict[str, str]:
    """Every rank's first error text per method (a collective under DDP: every rank calls it
    when any method failed anywhere, which every rank knows from the reduced counts)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(errors)
    gathered: list[dict[str, str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, errors)
    merged: dict[str, str] = {}
    for rank_errors in gathered:
        for method, text in (rank_errors or {}).items():
            merged.setdefault(method, text)
    return merged
