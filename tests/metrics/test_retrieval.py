"""Retrieval R@K (functional + Metric) against a naive Python sort, incl. DDP with 2 processes."""

from __future__ import annotations

import pytest
import torch
from tests._ddp import run_in_gloo_group
from torchmetrics.functional.retrieval import retrieval_recall

from lico_lightning.functional import retrieval_ranks, retrieval_recall_at_k
from lico_lightning.metrics import RetrievalRecallAtK

KS = (1, 2, 5, 10)


def _naive_rank(scores: list[float], relevant: list[bool]) -> int:
    """Sort by decreasing score, an irrelevant item before a relevant one of equal score."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], relevant[j]))
    return next(pos for pos, j in enumerate(order, start=1) if relevant[j])


def _naive_recall(scores: torch.Tensor, relevant: torch.Tensor, ks) -> list[float]:
    ranks = [_naive_rank(s, r) for s, r in zip(scores.tolist(), relevant.tolist())]
    return [sum(rank <= k for rank in ranks) / len(ranks) for k in ks]


def _coco_like(seed: int = 0, n_images: int = 12, captions_per_image: int = 5):
    """Image→text and text→image scores with 5 captions/image, negative values and ties."""
    g = torch.Generator().manual_seed(seed)
    image_of_caption = torch.arange(n_images).repeat_interleave(captions_per_image)
    # rounded to 1 decimal in [-1, 1]: many exact ties, about half the scores negative
    i2t = (torch.rand(n_images, image_of_caption.numel(), generator=g) * 2 - 1).round(decimals=1)
    relevant = torch.arange(n_images).unsqueeze(1) == image_of_caption.unsqueeze(0)
    return i2t, relevant


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_functional_and_metric_equal_naive_loop(seed: int) -> None:
    i2t, relevant = _coco_like(seed)
    assert (i2t < 0).float().mean() > 0.3 and i2t.unique().numel() < i2t.numel() / 2
    for scores, rel in ((i2t, relevant), (i2t.T.contiguous(), relevant.T.contiguous())):
        ref = _naive_recall(scores, rel, KS)
        functional = retrieval_recall_at_k(scores, rel, KS)
        metric = RetrievalRecallAtK(k=KS)
        for start in range(0, scores.shape[0], 7):  # query chunks of 7
            metric.update(scores[start : start + 7], rel[start : start + 7])
        assert functional.tolist() == pytest.approx(ref, abs=1e-7)
        assert metric.compute().tolist() == pytest.approx(ref, abs=1e-7)
        naive_ranks = [_naive_rank(s, r) for s, r in zip(scores.tolist(), rel.tolist())]
        assert retrieval_ranks(scores, rel).tolist() == naive_ranks


def test_ties_are_pessimistic_and_infinities_sort() -> None:
    scores = torch.tensor([[0.5, 0.5, 0.5], [float("-inf"), -1.0, float("inf")]])
    relevant = torch.tensor([[False, True, False], [False, False, True]])
    assert retrieval_ranks(scores, relevant).tolist() == [3, 1]
    # equal-scored relevant items do not push each other down
    assert retrieval_ranks(torch.zeros(1, 3), torch.tensor([[True, True, False]])).tolist() == [2]


def test_torchmetrics_recall_drops_negative_scores() -> None:
    """Why we do not use torchmetrics' RetrievalRecall (1.9): the relevant item ranks first with
    a negative cosine score and torchmetrics reports 0 — ours reports the hit."""
    scores, relevant = torch.tensor([[-0.2, -0.5]]), torch.tensor([[True, False]])
    assert float(retrieval_recall_at_k(scores, relevant, k=(1,))[0]) == 1.0
    assert _naive_recall(scores, relevant, (1,)) == [1.0]
    assert float(retrieval_recall(scores[0], relevant[0], top_k=1)) == 0.0


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_bad_input() -> None:
    good = torch.zeros(2, 3), torch.eye(3, dtype=torch.bool)[:2]
    with pytest.raises(ValueError, match="NaN"):
        retrieval_ranks(torch.tensor([[float("nan"), 0.0, 0.0]]), good[1][:1])
    with pytest.raises(ValueError, match=r"at least one relevant item.*\[1\]"):
        retrieval_ranks(good[0], torch.tensor([[True, False, False], [False] * 3]))
    with pytest.raises(TypeError, match="bool"):
        retrieval_ranks(good[0], good[1].long())
    with pytest.raises(ValueError, match="shape"):
        retrieval_ranks(good[0], good[1][:1])
    with pytest.raises(TypeError, match="floating"):
        retrieval_ranks(good[0].long(), good[1])
    with pytest.raises(ValueError, match=r"`k` >= 1"):
        retrieval_recall_at_k(*good, k=(0,))
    with pytest.raises(TypeError, match="sequence"):
        RetrievalRecallAtK(k=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one update"):
        RetrievalRecallAtK().compute()


def _ddp_rank(rank: int, world_size: int) -> list[float]:
    scores, relevant = _coco_like(3)
    metric = RetrievalRecallAtK(k=KS)
    rows = list(range(rank, scores.shape[0], world_size))
    metric.update(scores[rows], relevant[rows])
    return metric.compute().tolist()


@pytest.mark.distributed
def test_two_process_ddp_equals_one_process() -> None:
    results = run_in_gloo_group(_ddp_rank)
    ref = _naive_recall(*_coco_like(3), KS)
    for rank in (0, 1):
        assert results[rank] == pytest.approx(ref, abs=1e-7)
