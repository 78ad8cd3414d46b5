"""Input checks shared by every layer: fail early with "Expected ..., but got ..." messages.

These run before any work is done, so a bad call never leaves half-written output. They use
``ValueError`` / ``TypeError`` (never ``assert``, which ``python -O`` drops).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "check_choice",
    "check_finite",
    "check_positive",
    "check_probability",
    "check_tensor",
]


def check_tensor(
    name: str,
    x: object,
    ndim: int | Sequence[int] | None = None,
    *,
    floating: bool = False,
    nonempty: bool = True,
) -> Tensor:
    """Check that ``x`` is a tensor with the expected number of dims; return it.

    Example:
        >>> check_tensor("x", torch.zeros(2, 3), ndim=2).shape
        torch.Size([2, 3])
        >>> check_tensor("x", [1, 2])
        Traceback (most recent call last):
        ...
        TypeError: Expected `x` to be a torch.Tensor, but got list.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(x).__name__}.")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(
                f"Expected `{name}` to have {want} dims, but got shape {tuple(x.shape)}."
            )
    if floating and not torch.is_floating_point(x):
        raise TypeError(f"Expected `{name}` to be a floating-point tensor, but got {x.dtype}.")
    if nonempty and x.numel() == 0:
        raise ValueError(f"Expected `{name}` to be non-empty, but got shape {tuple(x.shape)}.")
    return x


def check_finite(name: str, x: Tensor) -> Tensor:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf (one host sync; call once per input)."""
    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"Expected `{name}` to be finite, but got {n_bad} non-finite value(s) "
            f"in a tensor of shape {tuple(x.shape)}."
        )
    return x


def check_positive(name: str, value: float | int, *, strict: bool = True) -> None:
    """Raise ``ValueError`` unless ``value`` is > 0 (or >= 0 when ``strict=False``)."""
    ok = value > 0 if strict else value >= 0
    if not ok:
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"Expected `{name}` {bound}, but got {value!r}.")


def check_probability(name: str, value: float, *, open_interval: bool = True) -> None:
    """Raise ``ValueError`` unless ``value`` lies in (0, 1) (or [0, 1])."""
    ok = 0.0 < value < 1.0 if open_interval else 0.0 <= value <= 1.0
    if not ok:
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"Expected `{name}` in {interval}, but got {value!r}.")


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Raise ``ValueError`` listing the valid choices unless ``value`` is one of them.

    Example:
        >>> check_choice("distance", "cosine", ["euclidean", "cosine"])
        'cosine'
    """
    if value not in choices:
        raise ValueError(f"Expected `{name}` to be one of {sorted(choices)}, but got {value!r}.")
    return value
