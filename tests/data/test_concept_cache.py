"""Train-time concept-score jitter: inside the binomial (Wilson) interval, off in evaluation."""

from __future__ import annotations

import pytest
import torch

from lico_lightning.data import CaptionEmbeddings, ConceptPairDataset
from lico_lightning.functional import wilson_interval

# image i has counts[i] captions; its score for concept c is hits[i, c] / counts[i]
COUNTS = torch.tensor([5, 5, 3, 1, 4])
HITS = torch.tensor([[1, 0, 5, 2], [0, 0, 0, 0], [3, 1, 0, 2], [1, 0, 0, 1], [2, 4, 1, 0]])


def data(train: bool, jitter: float | None, sparse: bool = True, seed: int = 0):
    offsets = torch.zeros(6, dtype=torch.long)
    offsets[1:] = COUNTS.cumsum(0)
    emb = CaptionEmbeddings(torch.randn(5, 3), torch.randn(int(COUNTS.sum()), 3), offsets)
    scores = HITS.float() / COUNTS[:, None]
    return ConceptPairDataset(
        emb, scores.to_sparse() if sparse else scores, train=train, seed=seed, score_jitter=jitter
    )


def test_wilson_interval_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for k, n in ((0, 5), (1, 5), (3, 3), (2, 4), (1, 1), (7, 20)):
        for level in (0.1, 0.5, 0.8, 0.95):
            ref = stats.binomtest(k, n).proportion_ci(level, method="wilson")
            low, high = wilson_interval(
                torch.tensor(k), torch.tensor(n), torch.tensor(level, dtype=torch.float64)
            )
            assert abs(float(low) - ref.low) < 1e-9 and abs(float(high) - ref.high) < 1e-9


def test_wilson_interval_hand_case_and_bad_input() -> None:
    # k = 2, n = 4, z = 1 (level 0.6827): centre (2 + 0.5) / 5 = 0.5, half 1/5 * sqrt(1 + 0.25)
    level = torch.special.ndtr(torch.tensor(1.0, dtype=torch.float64)) * 2 - 1
    low, high = wilson_interval(torch.tensor(2), torch.tensor(4), level)
    half = 1.25**0.5 / 5
    assert abs(float(low) - (0.5 - half)) < 1e-12 and abs(float(high) - (0.5 + half)) < 1e-12
    with pytest.raises(ValueError, match="0 <= successes <= trials"):
        wilson_interval(torch.tensor(3), torch.tensor(2), torch.tensor(0.5))
    with pytest.raises(ValueError, match=r"confidence levels in \[0, 1\)"):
        wilson_interval(torch.tensor(1), torch.tensor(2), torch.tensor(1.0))


@pytest.mark.parametrize("sparse", [True, False])
def test_jittered_scores_stay_inside_the_interval_and_change_with_the_epoch(sparse) -> None:
    a = 0.8
    train = data(True, a, sparse)
    low, high = wilson_interval(HITS, COUNTS[:, None], torch.tensor(a))
    exact = HITS.float() / COUNTS[:, None]
    epochs = []
    for epoch in range(6):
        rows = torch.stack([train[i + epoch * 5]["concepts"] for i in range(5)])
        assert bool((rows >= low.float() - 1e-6).all()) and bool(
            (rows <= high.float() + 1e-6).all()
        )
        assert torch.equal(rows[HITS == 0], torch.zeros(int((HITS == 0).sum())))  # zeros stay 0
        epochs.append(rows)
    moved = (epochs[0] != exact) & (HITS > 0)
    assert bool(moved.any()) and not torch.equal(epochs[0], epochs[1])  # it does jitter
    # some draws fall below the share, some above (both ends of the interval are used)
    stacked = torch.stack(epochs)[:, HITS > 0]
    share = exact[HITS > 0]
    assert bool((stacked < share).any()) and bool((stacked > share).any())
    # a pure function of (seed, epoch, index): a fresh dataset draws the same, another seed not
    again = data(True, a, sparse)
    assert torch.equal(again[7]["concepts"], epochs[1][2])
    assert not torch.equal(data(True, a, sparse, seed=1)[7]["concepts"], epochs[1][2])
    # dense and sparse storage draw identically
    other = data(True, a, not sparse)
    assert torch.equal(other[7]["concepts"], epochs[1][2])


def test_evaluation_and_no_jitter_give_the_exact_shares() -> None:
    exact = HITS.float() / COUNTS[:, None]
    for ds in (data(False, 0.8), data(True, None), data(True, 0.0)):
        rows = torch.stack([ds[i + 5]["concepts"] for i in range(5)])
        torch.testing.assert_close(rows, exact, rtol=0, atol=1e-7)


def test_jitter_needs_caption_shares() -> None:
    emb = CaptionEmbeddings(torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 2, 4]))
    with pytest.raises(ValueError, match="caption shares k/n"):
        ConceptPairDataset(emb, torch.tensor([[0.3, 0.0], [0.5, 1.0]]), score_jitter=0.8)
    with pytest.raises(ValueError, match=r"`score_jitter` in \[0, 1\)"):
        ConceptPairDataset(emb, torch.tensor([[0.5, 0.0], [0.5, 1.0]]), score_jitter=1.0)
    # evaluation datasets never jitter, so any scores are fine there
    ConceptPairDataset(emb, torch.tensor([[0.3, 0.0], [0.5, 1.0]]), train=False, score_jitter=0.8)
