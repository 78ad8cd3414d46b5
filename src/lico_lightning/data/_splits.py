"""Seeded, class-balanced index selection: limited-label splits, k-shot subsets, stratified splits.

Pure functions of ``(labels, sizes, seed)``: no Lightning, no global RNG (each call builds its own
``torch.Generator``), so a split can be recomputed anywhere (another process, a resumed run).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lico_lightning._validation import check_int

__all__ = [
    "class_balanced_indices",
    "limited_label_indices",
    "stratified_split_indices",
]


def _as_labels(labels: Sequence[int] | np.ndarray | Tensor) -> Tensor:
    if isinstance(labels, Tensor):
        out = labels.detach().cpu()
    else:
        out = torch.as_tensor(np.asarray(labels))
    if out.ndim != 1:
        raise ValueError(f"Expected `labels` to be 1-D, but got shape {tuple(out.shape)}.")
    if out.numel() == 0:
        raise ValueError("Expected `labels` to be non-empty, but got 0 labels.")
    if out.dtype.is_floating_point or out.dtype == torch.bool or out.dtype.is_complex:
        raise TypeError(f"Expected integer `labels`, but got dtype {out.dtype}.")
    out = out.long()
    if int(out.min()) < 0:
        raise ValueError(f"Expected non-negative `labels`, but got min {int(out.min())}.")
    return out


def _check_seed(seed: int) -> None:
    check_int("seed", seed, -(2**63))


def _within_class_rank(labels: Tensor, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Shuffle once, group by class; return (shuffled indices grouped by class, their class,
    their rank inside the class). Vectorised: one permutation and one stable sort."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(labels.numel(), generator=g)
    order = torch.sort(labels[perm], stable=True).indices
    idx = perm[order]
    cls = labels[idx]
    counts = torch.bincount(cls)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(idx.numel()) - starts[cls]
    return idx, cls, rank


def class_balanced_indices(
    labels: Sequence[int] | np.ndarray | Tensor,
    per_class: int,
    seed: int = 0,
    num_classes: int | None = None,
) -> Tensor:
    r"""Draw ``per_class`` indices of every class uniformly without replacement (seeded).

    Used for the k-shot subsets of the fine-grained benchmarks (``per_class = k``, as in CGC:
    k random training images per class) and, through :func:`limited_label_indices`, for the
    limited-label CIFAR / SVHN splits. One seeded permutation ``pi`` of all indices is grouped
    by class (stable), and the first ``k`` of each class are kept:

    .. math::

        S_k = \{\, i : \operatorname{rank}_{y_i}(i) < k \,\}, \qquad
        \operatorname{rank}_c(i) = |\{ j : y_j = c,\ \pi^{-1}(j) < \pi^{-1}(i) \}|,

    so every ``k``-subset of a class is equally likely, and for a fixed seed the subsets are
    nested (``S_k ⊂ S_{k'}`` for ``k < k'``).

    Args:
        labels: Class index of every sample, shape ``(B,)``.
        per_class: Number of samples to keep from each class.
        seed: Seed of the private generator (the global RNG is not touched).
        num_classes: Number of classes; default ``max(labels) + 1``. Every class must have at
            least ``per_class`` samples.

    Returns:
        Sorted ``long`` tensor of ``num_classes * per_class`` dataset indices.

    Example:
        >>> labels = [0, 0, 0, 1, 1, 1, 2, 2, 2]
        >>> idx = class_balanced_indices(labels, per_class=2, seed=0)
        >>> torch.bincount(torch.tensor(labels)[idx]).tolist()
        [2, 2, 2]
    """
    y = _as_labels(labels)
    _check_seed(seed)
    check_int("per_class", per_class, 1)
    n_cls = int(y.max()) + 1 if num_classes is None else num_classes
    if int(y.max()) >= n_cls:
        raise ValueError(f"Expected labels < num_classes={n_cls}, but got a label {int(y.max())}.")
    counts = torch.bincount(y, minlength=n_cls)
    short = torch.nonzero(counts < per_class).flatten()
    if short.numel() > 0:
        c = int(short[0])
        raise ValueError(
            f"Expected at least {per_class} samples in every class, but got "
            f"{int(counts[c])} in class {c} ({short.numel()} class(es) too small)."
        )
    idx, _, rank = _within_class_rank(y, seed)
    return torch.sort(idx[rank < per_class]).values


def limited_label_indices(
    labels: Sequence[int] | np.ndarray | Tensor,
    num_labels: int,
    seed: int = 0,
    num_classes: int | None = None,
) -> Tensor:
    r"""Class-balanced labelled subset of ``num_labels`` samples (FixMatch / FlexMatch splits).

    .. math::

        k = \text{num\_labels} / C \ \text{per class}, \qquad
        |S| = \text{num\_labels},

    drawn uniformly without replacement with a seeded private generator
    (:func:`class_balanced_indices`): CIFAR-10 40 / 250 / 4000, CIFAR-100 400 / 2500 / 10000,
    SVHN 40 / 1000 in the LICO paper (Table 3).

    Args:
        labels: Class index of every training sample, shape ``(B,)``.
        num_labels: Total labelled samples; must be a multiple of ``num_classes``.
        seed: Seed of the private generator.
        num_classes: Number of classes; default ``max(labels) + 1``.

    Returns:
        Sorted ``long`` tensor of ``num_labels`` indices.

    Example:
        >>> labels = torch.arange(10).repeat(50)  # 10 classes x 50 samples
        >>> limited_label_indices(labels, num_labels=40, seed=1).numel()
        40
    """
    y = _as_labels(labels)
    n_cls = int(y.max()) + 1 if num_classes is None else num_classes
    check_int("num_labels", num_labels, 1)
    if num_labels % n_cls != 0:
        raise ValueError(
            f"Expected `num_labels` to be a multiple of the number of classes ({n_cls}) for a "
            f"class-balanced split, but got {num_labels}."
        )
    return class_balanced_indices(y, num_labels // n_cls, seed=seed, num_classes=n_cls)


def stratified_split_indices(
    labels: Sequence[int] | np.ndarray | Tensor,
    fractions: Sequence[float],
    seed: int = 0,
) -> list[Tensor]:
    r"""Split indices into stratified parts (e.g. train / val / test) with a seeded generator.

    Part ``j > 0`` receives

    .. math::

        m_{c,j} = \operatorname{round}(n_c \, f_j)

    samples of each class ``c`` (class size ``n_c``, fraction ``f_j``); part 0 receives the
    rest, so the parts cover every index exactly once.

    Args:
        labels: Class index of every sample, shape ``(B,)``.
        fractions: Fraction of every class in each part after the first, e.g. ``[0.2, 0.2]``
            for a 60 / 20 / 20 split; each in ``[0, 1)`` with sum ``< 1``.
        seed: Seed of the private generator.

    Returns:
        ``len(fractions) + 1`` sorted ``long`` index tensors.

    Example:
        >>> labels = torch.arange(3).repeat(10)
        >>> [p.numel() for p in stratified_split_indices(labels, [0.2, 0.2], seed=0)]
        [18, 6, 6]
    """
    y = _as_labels(labels)
    _check_seed(seed)
    fr = [float(f) for f in fractions]
    if any(not 0.0 <= f < 1.0 for f in fr) or sum(fr) >= 1.0:
        raise ValueError(
            f"Expected `fractions` in [0, 1) summing to < 1, but got {list(fractions)!r}."
        )
    counts = torch.bincount(y)
    # Per-class cut points: part j gets ranks [bounds[j], bounds[j+1]) counted from the end.
    sizes = torch.stack([torch.round(counts.double() * f).long() for f in fr])  # (J, classes)
    tight = (sizes.sum(0) >= counts) & (counts > 0)
    if bool(tight.any()):
        c = int(torch.nonzero(tight).flatten()[0])
        raise ValueError(
            f"Expected every class to keep at least one sample in the first part, but class "
            f"{c} has {int(counts[c])} samples and fractions {fr} take them all."
        )
    empty = (sizes == 0) & (counts > 0)  # (J, classes): a part without any sample of a class
    if bool(empty.any()):
        j, c = (int(v) for v in torch.nonzero(empty)[0])
        missing = torch.nonzero(empty[j]).flatten().tolist()
        warnings.warn(
            f"Part {j + 1} of the stratified split gets no sample of classes {missing}: class {c} "
            f"has {int(counts[c])} samples and fraction {fr[j]} of them rounds to 0. Its "
            "per-class metrics will be undefined; use larger fractions or more data.",
            stacklevel=2,
        )
    idx, cls, rank = _within_class_rank(y, seed)
    ends = torch.cumsum(sizes, 0)  # (J, classes)
    part = torch.zeros_like(idx)  # rank < ends[0] -> part 1, ... ; the rest -> part 0
    for j in range(len(fr) - 1, -1, -1):  # loop over parts (a handful), not over samples
        part = torch.where(rank < ends[j, cls], torch.full_like(part, j + 1), part)
    return [torch.sort(idx[part == j]).values for j in range(len(fr) + 1)]
