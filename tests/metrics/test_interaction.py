"""torchmetrics classes for AID, PGR and p-faithfulness: class == mean of functional, DDP merge."""

from __future__ import annotations

import warnings

import pytest
import torch

from lico_lightning.functional import (
    area_between_insertion_deletion,
    pointing_game_recognition,
    spearman_correlation,
)
from lico_lightning.metrics import (
    AreaBetweenInsertionDeletion,
    PointingGameRecognition,
    SpearmanCorrelation,
)


def aid_batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in (5, 9, 3):  # different numbers of players across updates
        ins = torch.rand(2, n + 1, generator=gen)
        ins[:, -1] += 2.0
        out.append((ins, torch.rand(2, n + 1, generator=gen)))
    return out


def pgr_batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(3, 4, 10, generator=gen), torch.rand(3, 4, 10, generator=gen) < 0.3)
        for _ in range(3)
    ]


def corr_batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(3):
        a = torch.randn(4, 50, generator=gen)
        out.append((a, a + torch.randn(4, 50, generator=gen)))
    return out


CASES = [
    (AreaBetweenInsertionDeletion, area_between_insertion_deletion, aid_batches),
    (PointingGameRecognition, pointing_game_recognition, pgr_batches),
    (SpearmanCorrelation, spearman_correlation, corr_batches),
]


@pytest.mark.parametrize("cls,fn,batches", CASES)
def test_class_equals_mean_of_functional(cls, fn, batches) -> None:
    metric = cls()
    values = []
    for args in batches(0):
        metric.update(*args)
        values.append(fn(*args).double())
    want = torch.cat(values).mean()
    assert metric.compute().item() == pytest.approx(want.item(), rel=1e-6)
    assert cls.higher_is_better is True and cls.full_state_update is False
    metric.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about compute before update
        with pytest.raises(ValueError, match="at least one update"):
            metric.compute()


@pytest.mark.parametrize("cls,fn,batches", CASES)
def test_merged_states_equal_a_single_run(cls, fn, batches) -> None:
    """Sum/count states reduce like DDP: two shards merged == all batches on one process.

    ``merge_state`` applies each state's ``dist_reduce_fx`` (sum), which is what the DDP sync
    does across ranks.
    """
    a, b, both = cls(), cls(), cls()
    for args in batches(0):
        a.update(*args)
        both.update(*args)
    for args in batches(1):
        b.update(*args)
        both.update(*args)
    a.merge_state(b)
    assert a.compute().item() == pytest.approx(both.compute().item(), rel=1e-6)
