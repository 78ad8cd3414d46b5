"""The shared argument checks: the errors every caller relies on."""

from __future__ import annotations

import math

import pytest
import torch

from lico_lightning._validation import check_int, check_int_pair, check_real, check_tensor


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [(2.0, TypeError, "to be an int"), (True, TypeError, "to be an int"), (0, ValueError, ">= 1")],
)
def test_check_int_errors(value, error, match) -> None:
    with pytest.raises(error, match=match):
        check_int("steps", value, 1)
    assert check_int("steps", 1, 1) == 1


@pytest.mark.parametrize("value", [(0, 2), (2,), (2, 2, 2), (2.0, 2), (True, 2), "22", None])
def test_check_int_pair_errors(value) -> None:
    with pytest.raises(ValueError, match=r"`grid` to be two positive ints \(Hp, Wp\)"):
        check_int_pair("grid", value, "(Hp, Wp)")
    assert check_int_pair("size", [3, 4]) == (3, 4)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.zeros(3, 1), ValueError, "to have 1 dims"),  # ndim is checked before shape
        (torch.zeros(3, dtype=torch.long), TypeError, "floating-point"),
        (torch.zeros(2), ValueError, r"`w` of shape \(3,\), but got \(2,\)"),
    ],
)
def test_check_tensor_shape(x, error, match) -> None:
    with pytest.raises(error, match=match):
        check_tensor("w", x, ndim=1, floating=True, shape=(3,))
    assert check_tensor("w", torch.zeros(3), ndim=1, floating=True, shape=(3,)).shape == (3,)


def test_check_real_errors() -> None:
    for bad in ("0.1", True, None):
        with pytest.raises(TypeError, match="`beta` to be a float"):
            check_real("beta", bad)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="`beta` to be finite"):
            check_real("beta", bad)
    with pytest.raises(ValueError, match=r"`beta` > 0.0"):
        check_real("beta", 0.0, low=0.0)
    assert check_real("beta", 0, low=0.0, strict=False) == 0.0
    assert isinstance(check_real("beta", 1), float)
