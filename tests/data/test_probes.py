"""The one probe draw (`lico_lightning.data.draw_probe_indices`): plain datasets follow
`torch.randperm` with the given generator; datasets with their own draw use theirs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from lico_lightning.data import draw_probe_indices, draw_probes, probe_items


def test_plain_dataset_draw_is_the_generators_randperm() -> None:
    dataset = TensorDataset(torch.arange(30.0))
    for seed in (0, 7):
        expected = torch.randperm(30, generator=torch.Generator().manual_seed(seed))[:5]
        drawn = draw_probe_indices(dataset, 5, torch.Generator().manual_seed(seed))
        assert drawn == expected.tolist()
        items = draw_probes(dataset, 5, torch.Generator().manual_seed(seed))
        assert [float(x) for (x,) in items] == expected.float().tolist()
    assert draw_probe_indices(dataset, 5, torch.Generator().manual_seed(0)) != draw_probe_indices(
        dataset, 5, torch.Generator().manual_seed(1)
    )
    assert sorted(draw_probe_indices(dataset, 99, torch.Generator())) == list(range(30))


def test_a_dataset_with_its_own_draw_uses_it() -> None:
    class Keyed:
        def __len__(self) -> int:
            return 4

        def draw_probe_indices(self, num, generator):
            return [(k, k + 1) for k in range(num)]

        def probe(self, a, b):
            return a * 10 + b

    assert draw_probe_indices(Keyed(), 2, torch.Generator()) == [(0, 1), (1, 2)]
    assert probe_items(Keyed(), [[2, 3]]) == [23]  # keys come back from state_dict as lists
    assert draw_probes(Keyed(), 2, torch.Generator()) == [1, 12]


def test_bad_draw_input() -> None:
    with pytest.raises(TypeError, match="generator"):
        draw_probe_indices([1, 2, 3], 2, 0)
    with pytest.raises(TypeError, match="map-style"):
        draw_probe_indices(iter([1, 2]), 2, torch.Generator())
    with pytest.raises(ValueError, match="num"):
        draw_probe_indices([1, 2, 3], 0, torch.Generator())
