"""AID, PGR and p-faithfulness correlation against naive loops, hand cases and scipy."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from lico_lightning.functional import (
    area_between_insertion_deletion,
    pointing_game_recognition,
    spearman_correlation,
)
from lico_lightning.functional.rank import _average_ranks


def naive_aid(ins: list[float], dele: list[float], normalize: bool) -> float:
    n = len(ins) - 1
    total = 0.0
    for k in range(1, n + 1):
        a, b = ins[k], dele[k]
        if normalize:
            a = (a - ins[0]) / (ins[n] - ins[0])
            b = (b - ins[0]) / (ins[n] - ins[0])
        total += a - b
    return total / n if normalize else total


def naive_pgr(e: torch.Tensor, obj: torch.Tensor, tokens: torch.Tensor) -> float:
    num = den = 0.0
    for k in range(e.shape[0]):
        if not tokens[k]:
            continue
        for j in range(e.shape[1]):
            v = e[k, j].item()
            den += abs(v)
            if obj[k, j] and v > 0:
                num += v
            if not obj[k, j] and v < 0:
                num += -v
    return num / den


def test_aid_hand_case_from_definition_9() -> None:
    # n = 3: ν(M_max,k) = 0, 5, 6, 8 and ν(M_min,k) = 0, -1, 2, 8
    ins = torch.tensor([0.0, 5.0, 6.0, 8.0])
    dele = torch.tensor([0.0, -1.0, 2.0, 8.0])
    assert area_between_insertion_deletion(ins, dele, normalize=False).item() == pytest.approx(
        (5 + 1) + (6 - 2) + 0
    )
    assert area_between_insertion_deletion(ins, dele).item() == pytest.approx(10 / (3 * 8))


@pytest.mark.parametrize("normalize", [True, False])
def test_aid_matches_naive_loop_batched(normalize: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    ins = torch.randn(4, 3, 9, generator=gen, dtype=torch.float64)
    dele = torch.randn(4, 3, 9, generator=gen, dtype=torch.float64)
    got = area_between_insertion_deletion(ins, dele, normalize=normalize)
    assert got.shape == (4, 3)
    for a in range(4):
        for b in range(3):
            want = naive_aid(ins[a, b].tolist(), dele[a, b].tolist(), normalize)
            assert got[a, b].item() == pytest.approx(want, rel=1e-12)


def test_aid_of_identical_curves_is_zero() -> None:
    x = torch.tensor([1.0, 2.0, 0.5, 3.0])
    assert area_between_insertion_deletion(x, x).item() == 0.0


def test_pgr_hand_cases_and_naive_loop() -> None:
    e = torch.tensor([[3.0, -1.0, 0.0], [-2.0, 1.0, 2.0]])
    obj = torch.tensor([[True, False, False], [False, True, False]])
    # token 0: in +3 correct, out -1 correct; token 1: out -2 correct, in +1 correct, out +2 wrong
    assert pointing_game_recognition(e, obj).item() == pytest.approx(7 / 9)
    only_first = torch.tensor([True, False])
    assert pointing_game_recognition(e, obj, only_first).item() == pytest.approx(1.0)
    gen = torch.Generator().manual_seed(1)
    e = torch.randn(5, 4, 12, generator=gen, dtype=torch.float64)
    obj = torch.rand(5, 4, 12, generator=gen) < 0.3
    tok = torch.rand(5, 4, generator=gen) < 0.7
    tok[:, 0] = True
    got = pointing_game_recognition(e, obj, tok)
    for b in range(5):
        assert got[b].item() == pytest.approx(naive_pgr(e[b], obj[b], tok[b]), rel=1e-12)


def test_average_ranks_match_scipy_with_ties() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, 6, (3, 40), generator=gen).double()
    got = _average_ranks(x)
    for r in range(3):
        torch.testing.assert_close(got[r], torch.from_numpy(stats.rankdata(x[r].numpy())))


def test_spearman_correlation_matches_scipy_spearman() -> None:
    gen = torch.Generator().manual_seed(3)
    nu = torch.randn(6, 200, generator=gen, dtype=torch.float64)
    approx = (
        nu
        + torch.randn(6, 200, generator=gen, dtype=torch.float64)
        * torch.linspace(0.1, 3, 6)[:, None]
    )
    approx[0] = approx[0].round()  # ties
    got = spearman_correlation(nu, approx)
    for b in range(6):
        want = stats.spearmanr(nu[b].numpy(), approx[b].numpy()).statistic
        assert got[b].item() == pytest.approx(want, abs=1e-12)
    assert got[1] > got[5]  # more noise, lower correlation
    # monotone transformations do not change it
    assert spearman_correlation(nu[0], nu[0].exp()).item() == pytest.approx(1.0)
    assert spearman_correlation(nu[0], -nu[0]).item() == pytest.approx(-1.0)


def test_errors() -> None:
    with pytest.raises(ValueError, match="same shape"):
        area_between_insertion_deletion(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="n\\+1 >= 2"):
        area_between_insertion_deletion(torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="normalize=False"):
        area_between_insertion_deletion(torch.tensor([1.0, 2.0, 1.0]), torch.zeros(3))
    with pytest.raises(TypeError, match="bool"):
        pointing_game_recognition(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="same shape"):
        pointing_game_recognition(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="nonzero interactions"):
        pointing_game_recognition(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"`token_mask` of shape \(2,\)"):
        pointing_game_recognition(
            torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool), torch.ones(3, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="constant"):
        spearman_correlation(torch.ones(5), torch.randn(5))
    with pytest.raises(ValueError, match="at least 2"):
        spearman_correlation(torch.ones(1), torch.ones(1))
    with pytest.raises(TypeError, match="floating"):
        spearman_correlation(torch.arange(4), torch.arange(4))
