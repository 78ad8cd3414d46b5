"""A mean metric computed before any sample (issue 18 point 16): NaN and a warning, never a
plausible score of 0; what the evaluations pass explicitly keeps its meaning."""

from __future__ import annotations

import math
import warnings

import pytest

from lico_lightning.metrics import (
    AverageDrop,
    DeletionAUC,
    IncreaseInConfidence,
    InsertionAUC,
    InsertionDeletionAUC,
)


def _compute(metric):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = metric.compute()
    return value, [str(w.message) for w in caught]


@pytest.mark.parametrize(
    "cls", [InsertionAUC, DeletionAUC, AverageDrop, IncreaseInConfidence, InsertionDeletionAUC]
)
def test_empty_metric_is_nan_with_a_warning(cls):
    value, messages = _compute(cls())
    values = value.values() if isinstance(value, dict) else [value]
    assert all(math.isnan(float(v)) for v in values)
    assert any(cls.__name__ in m and "returning NaN" in m for m in messages)


def test_explicit_zero_division_keeps_its_meaning():
    value, messages = _compute(InsertionAUC(zero_division=float("nan")))
    assert math.isnan(float(value)) and not any("returning" in m for m in messages)
    value, messages = _compute(InsertionAUC(zero_division=0.25))
    assert float(value) == 0.25 and any("returning 0.25" in m for m in messages)
    with pytest.raises(ValueError, match="at least one update"):
        _compute(InsertionAUC(zero_division=None))


def test_zero_division_type_is_checked():
    with pytest.raises(TypeError, match="Expected `zero_division`"):
        InsertionAUC(zero_division="nan")  # type: ignore[arg-type]
