"""Input checks shared by every layer: fail early with "Expected ..., but got ..." messages.

These run before any work is done, so a bad call never leaves half-written output. They use
``ValueError`` / ``TypeError`` (never ``assert``, which ``python -O`` drops).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import Tensor

__all__ = [
    "check_bool",
    "check_choice",
    "check_finite",
    "check_int",
    "check_int_pair",
    "check_logits",
    "check_positive",
    "check_probability",
    "check_real",
    "check_target",
    "check_target_range",
    "check_tensor",
]

_Choice = TypeVar("_Choice", bound=str)  # a Literal stays that Literal


def check_tensor(
    name: str,
    x: object,
    ndim: int | Sequence[int] | None = None,
    *,
    floating: bool = False,
    nonempty: bool = True,
    shape: Sequence[int] | None = None,
) -> Tensor:
    """Check that ``x`` is a tensor with the expected number of dims (or exact ``shape``);
    return it.

    Example:
        >>> check_tensor("x", torch.zeros(2, 3), ndim=2).shape
        torch.Size([2, 3])
        >>> check_tensor("x", [1, 2])
        Traceback (most recent call last):
        ...
        TypeError: Expected `x` to be a torch.Tensor, but got list.
        >>> check_tensor("x", torch.zeros(2), shape=(3,))
        Traceback (most recent call last):
        ...
        ValueError: Expected `x` of shape (3,), but got (2,).
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
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"Expected `{name}` of shape {tuple(shape)}, but got {tuple(x.shape)}.")
    return x


def check_pairable(
    name_a: str, a: object, name_b: str, b: object, *, ndim: int, all_pairs: bool
) -> tuple[Tensor, Tensor]:
    """Check two floating batches whose rows are to be paired (scores, interactions): ``ndim``
    dims each, the same last (embedding) width ``K`` and, for row-wise pairs (``all_pairs``
    False), the same batch size; return them.

    Example:
        >>> a, b = check_pairable("a", torch.zeros(2, 4), "b", torch.zeros(3, 4), ndim=2,
        ...                       all_pairs=True)
        >>> check_pairable("a", a, "b", b, ndim=2, all_pairs=False)
        Traceback (most recent call last):
        ...
        ValueError: Expected `a` and `b` with the same batch size, but got 2 and 3 (use all_pairs=True for all pairs).
    """
    a = check_tensor(name_a, a, ndim=ndim, floating=True)
    b = check_tensor(name_b, b, ndim=ndim, floating=True)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"Expected `{name_a}` and `{name_b}` of the same embedding width K, but got shapes "
            f"{tuple(a.shape)} and {tuple(b.shape)}."
        )
    if not all_pairs and a.shape[0] != b.shape[0]:
        raise ValueError(
            f"Expected `{name_a}` and `{name_b}` with the same batch size, but got "
            f"{a.shape[0]} and {b.shape[0]} (use all_pairs=True for all pairs)."
        )
    return a, b


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
    """Raise ``ValueError`` unless ``value`` is finite and > 0 (or >= 0 when ``strict=False``).

    Example:
        >>> check_positive("lr", float("inf"))
        Traceback (most recent call last):
        ...
        ValueError: Expected `lr` > 0 and finite, but got inf.
    """
    ok = (value > 0 if strict else value >= 0) and math.isfinite(value)
    if not ok:
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"Expected `{name}` {bound} and finite, but got {value!r}.")


def check_probability(name: str, value: float, *, open_interval: bool = True) -> None:
    """Raise ``ValueError`` unless ``value`` lies in (0, 1) (or [0, 1])."""
    ok = 0.0 < value < 1.0 if open_interval else 0.0 <= value <= 1.0
    if not ok:
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"Expected `{name}` in {interval}, but got {value!r}.")


def check_choice(name: str, value: _Choice, choices: Sequence[str]) -> _Choice:
    """Raise ``ValueError`` listing the valid choices unless ``value`` is one of them.

    Example:
        >>> check_choice("distance", "cosine", ["euclidean", "cosine"])
        'cosine'
    """
    if value not in choices:
        raise ValueError(f"Expected `{name}` to be one of {sorted(choices)}, but got {value!r}.")
    return value


def check_int(name: str, value: object, minimum: int) -> int:
    """Raise ``TypeError`` unless ``value`` is an int (not a bool), ``ValueError`` if below
    ``minimum``; return it.

    Example:
        >>> check_int("steps", 3, 1)
        3
        >>> check_int("steps", 0, 1)
        Traceback (most recent call last):
        ...
        ValueError: Expected `steps` >= 1, but got 0.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"Expected `{name}` to be an int, but got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"Expected `{name}` >= {minimum}, but got {value!r}.")
    return value


def check_int_pair(name: str, value: object, letters: str = "(H, W)") -> tuple[int, int]:
    """Raise ``ValueError`` unless ``value`` is a tuple/list of two positive ints (sizes, grids).

    Example:
        >>> check_int_pair("grid", [2, 3], "(Hp, Wp)")
        (2, 3)
    """
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(f"Expected `{name}` to be two positive ints {letters}, but got {value!r}.")
    return int(value[0]), int(value[1])


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    strict: bool = True,
    high: float | None = None,
) -> float:
    """Raise unless ``value`` is a finite real number (int or float, not a bool) and, with
    ``low``, ``> low`` (``>= low`` when ``strict=False``), with ``high``, ``<= high``; return it
    as a float.

    Example:
        >>> check_real("beta", 0.1, low=0.0, strict=False)
        0.1
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"Expected `{name}` to be a float (or int), but got {type(value).__name__}."
        )
    if not math.isfinite(value):
        raise ValueError(f"Expected `{name}` to be finite, but got {value!r}.")
    if low is not None and (value <= low if strict else value < low):
        bound = f"> {low}" if strict else f">= {low}"
        raise ValueError(f"Expected `{name}` {bound}, but got {value!r}.")
    if high is not None and value > high:
        raise ValueError(f"Expected `{name}` <= {high}, but got {value!r}.")
    return float(value)


def check_target(target: object, batch_size: int, num_classes: int | None = None) -> Tensor:
    """Raise unless ``target`` is a ``(batch_size,)`` ``torch.long`` tensor of class indices
    (``TypeError`` for the wrong type, ``ValueError`` for the wrong shape or, with
    ``num_classes``, a class outside ``[0, num_classes)``); return it.

    Example:
        >>> check_target(torch.tensor([0, 2]), 2, num_classes=3)
        tensor([0, 2])
    """
    target = check_tensor("target", target, 1)
    if target.dtype != torch.long:
        raise TypeError(f"Expected `target` to be a torch.long tensor, but got {target.dtype}.")
    if target.shape[0] != batch_size:
        raise ValueError(
            f"Expected `target` of shape ({batch_size},), but got {tuple(target.shape)}."
        )
    if num_classes is not None:
        check_target_range(target, num_classes)
    return target


def check_target_range(target: Tensor, num_classes: int) -> None:
    """Raise ``ValueError`` unless every ``target`` lies in ``[0, num_classes)``."""
    bad = (target < 0) | (target >= num_classes)
    if bool(bad.any()):
        raise ValueError(
            f"Expected `target` in [0, {num_classes}) (the model has {num_classes} classes), "
            f"but got {target[bad].tolist()}."
        )


def check_logits(logits: object, batch_size: int) -> Tensor:
    """Raise ``ValueError`` unless a model output is finite ``(batch_size, num_classes)`` logits.

    Example:
        >>> check_logits(torch.zeros(2, 3), 2).shape
        torch.Size([2, 3])
    """
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != batch_size:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"Expected the model to return logits of shape (B, num_classes) = ({batch_size}, ...), "
            f"but got {shape}."
        )
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(
            "Expected the model to return finite logits, but got "
            f"{int((~torch.isfinite(logits)).sum())} non-finite value(s)."
        )
    return logits


def check_bool(name: str, value: object) -> bool:
    """Raise ``TypeError`` unless ``value`` is a bool; return it.

    Example:
        >>> check_bool("all_pairs", 1)
        Traceback (most recent call last):
        ...
        TypeError: Expected `all_pairs` to be a bool, but got int.
    """
    if not isinstance(value, bool):
        raise TypeError(f"Expected `{name}` to be a bool, but got {type(value).__name__}.")
    return value
