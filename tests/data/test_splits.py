"""Class-balanced / k-shot / stratified index selection against naive per-class references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lico_lightning.data import (
    class_balanced_indices,
    limited_label_indices,
    stratified_split_indices,
)


def _cifar_like_labels(num_classes: int = 10, per_class: int = 50, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return labels[torch.randperm(labels.numel(), generator=g)]


@pytest.mark.parametrize("num_labels", [40, 250, 4000])
def test_limited_labels_are_class_balanced(num_labels: int) -> None:
    labels = _cifar_like_labels(10, 500)
    idx = limited_label_indices(labels, num_labels, seed=3)
    assert idx.numel() == num_labels == idx.unique().numel()
    assert torch.equal(idx, idx.sort().values)
    # Naive reference: count each class in a Python loop.
    picked = labels[idx].tolist()
    assert all(picked.count(c) == num_labels // 10 for c in range(10))


def test_selection_is_deterministic_and_seed_dependent() -> None:
    labels = _cifar_like_labels(10, 100)
    a = limited_label_indices(labels, 40, seed=1)
    b = limited_label_indices(labels.numpy(), 40, seed=1)  # numpy labels, same answer
    c = limited_label_indices(labels.tolist(), 40, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_selection_does_not_touch_the_global_rng() -> None:
    labels = _cifar_like_labels(10, 100)
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002 - checking the legacy global
    class_balanced_indices(labels, 5, seed=0)
    stratified_split_indices(labels, [0.2], seed=0)
    assert torch.equal(state, torch.get_rng_state())
    assert np.array_equal(np_state, np.random.get_state()[1])  # noqa: NPY002


def test_smaller_budgets_are_nested_in_larger_ones() -> None:
    labels = _cifar_like_labels(10, 500)
    small = set(limited_label_indices(labels, 40, seed=7).tolist())
    large = set(limited_label_indices(labels, 250, seed=7).tolist())
    assert small < large


def test_each_sample_is_drawn_with_equal_probability() -> None:
    # Class 0 has 5 samples, class 1 has 3; with 2 per class, P(pick) = 2/5 and 2/3.
    labels = torch.tensor([0, 1, 0, 0, 1, 0, 1, 0])
    counts = torch.zeros(8)
    trials = 3000
    for seed in range(trials):
        counts[class_balanced_indices(labels, 2, seed=seed)] += 1
    expected = torch.where(labels == 0, 2 / 5, 2 / 3)
    # Binomial std <= sqrt(0.25 / 3000) ~ 0.009; allow 4.5 sigma.
    torch.testing.assert_close(counts / trials, expected, atol=0.04, rtol=0)


def test_k_shot_with_explicit_num_classes() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    idx = class_balanced_indices(labels, 1, seed=0, num_classes=3)
    assert sorted(labels[idx].tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="at least 1 samples in every class, but got 0 in class 3"):
        class_balanced_indices(labels, 1, seed=0, num_classes=4)
    with pytest.raises(ValueError, match="labels < num_classes=2"):
        class_balanced_indices(labels, 1, seed=0, num_classes=2)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda y: limited_label_indices(y, 45), ValueError, "multiple of the number of classes"),
        (lambda y: limited_label_indices(y, 1010), ValueError, "at least 101 samples"),
        (lambda y: limited_label_indices(y, 0), ValueError, r"`num_labels` >= 1"),
        (lambda y: class_balanced_indices(y, 2.0), TypeError, r"`per_class` to be an int"),
        (lambda y: class_balanced_indices(y.float(), 2), TypeError, "integer `labels`"),
        (lambda y: class_balanced_indices(y.view(10, -1), 2), ValueError, "1-D"),
        (lambda y: class_balanced_indices(y[:0], 2), ValueError, "non-empty"),
        (lambda y: class_balanced_indices(y - 1, 2), ValueError, "non-negative"),
        (lambda y: class_balanced_indices(y, 2, seed=1.5), TypeError, "seed"),
    ],
)
def test_invalid_requests_raise(call, error, match: str) -> None:
    with pytest.raises(error, match=match):
        call(_cifar_like_labels(10, 100))


def test_stratified_split_matches_per_class_rounding() -> None:
    labels = torch.tensor([0] * 17 + [1] * 9 + [2] * 30 + [3] * 1)
    labels = labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(1))]
    train, val, test = stratified_split_indices(labels, [0.2, 0.3], seed=5)
    allidx = torch.cat([train, val, test])
    assert torch.equal(allidx.sort().values, torch.arange(labels.numel()))  # a partition
    for c, n in enumerate([17, 9, 30, 1]):
        assert int((labels[val] == c).sum()) == round(n * 0.2)
        assert int((labels[test] == c).sum()) == round(n * 0.3)
        assert int((labels[train] == c).sum()) == n - round(n * 0.2) - round(n * 0.3)
    again = stratified_split_indices(labels, [0.2, 0.3], seed=5)
    assert all(torch.equal(a, b) for a, b in zip([train, val, test], again))


def test_stratified_split_errors() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="summing to < 1"):
        stratified_split_indices(labels, [0.5, 0.5])
    with pytest.raises(ValueError, match="summing to < 1"):
        stratified_split_indices(labels, [-0.1])
    with pytest.raises(ValueError, match="keep at least one sample"):
        stratified_split_indices(labels, [0.4, 0.4])


def test_a_part_without_some_class_is_warned_about():
    labels = torch.tensor([0] * 20 + [1] * 3)  # class 1: 3 * 0.1 rounds to 0
    with pytest.warns(UserWarning, match=r"Part 1 .* no sample of classes \[1\]"):
        parts = stratified_split_indices(labels, [0.1])
    assert (labels[parts[1]] == 1).sum() == 0  # what the warning says


def test_a_split_with_every_class_in_every_part_is_silent():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stratified_split_indices(torch.arange(3).repeat(10), [0.2, 0.2])
