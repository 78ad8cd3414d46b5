"""Retrieval faithfulness (EXPLAIN-R Tables 2–5) == a naive loop (ties, blocks).

The class under 2-process DDP (strided rank shares, re-ordered by index) is a row of
tests/metrics/test_metric_table.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from lico_lightning.functional import blockwise_retrieval_faithfulness, retrieval_faithfulness
from lico_lightning.metrics import RetrievalFaithfulness

K = (1, 2, 3)


def naive_block(sur: list[list[float]], clip: list[list[float]] | None, ks, pairing=False):
    """R@K per direction with Python loops: CLIP's first argmax is the answer, ties count against."""
    n = len(sur)
    out = []
    for transpose in (False, True):
        s = [[sur[j][i] for j in range(n)] for i in range(n)] if transpose else sur
        c = None
        if clip is not None:
            c = [[clip[j][i] for j in range(n)] for i in range(n)] if transpose else clip
        hits = [0] * len(ks)
        for q in range(n):
            if pairing:
                answer = q
            else:
                answer = max(range(n), key=lambda j: (c[q][j], -j))  # first index of the max
            rank = 1 + sum(1 for j in range(n) if j != answer and s[q][j] >= s[q][answer])
            for a, kk in enumerate(ks):
                hits[a] += rank <= kk
        out.append([h / n for h in hits])
    return out


def test_one_block_with_ties_equals_naive_loop() -> None:
    clip = [[3.0, 3.0, 1.0, 0.0], [0.0, 2.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0]]
    sur = [[1.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 3.0, 0.0, 3.0], [2.0, 0.0, 1.0, 2.0]]
    got = retrieval_faithfulness(torch.tensor(sur), torch.tensor(clip), K)
    torch.testing.assert_close(got, torch.tensor(naive_block(sur, clip, K)))
    got = retrieval_faithfulness(torch.tensor(sur), None, K, reference="pairing")
    torch.testing.assert_close(got, torch.tensor(naive_block(sur, None, K, pairing=True)))
    # a constant surrogate never beats a tie: only R@N is 1
    flat = retrieval_faithfulness(torch.zeros(4, 4), torch.tensor(clip), (1, 3, 4))
    torch.testing.assert_close(flat, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))


def embeddings(n=11, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, k, generator=g)
    sur = img + 0.8 * torch.randn(n, k, generator=g)
    txt = torch.randn(n, k, generator=g)
    txt[5] = txt[4]  # duplicate captions: ties in both CLIP and surrogate scores
    return sur, img, txt


def cos(a, b):
    return float(a @ b) / (math.sqrt(float(a @ a)) * math.sqrt(float(b @ b)))


@pytest.mark.parametrize("reference", ["clip", "pairing"])
def test_blocks_are_consecutive_and_averaged_like_the_naive_loop(reference) -> None:
    sur, img, txt = embeddings()
    block = 4  # blocks 0-3, 4-7, 8-10 (a shorter last block counts as one block)
    per_block = []
    for start in range(0, 11, block):
        rows = range(start, min(start + block, 11))
        s = [[cos(sur[i], txt[j]) for j in rows] for i in rows]
        c = [[cos(img[i], txt[j]) for j in rows] for i in rows]
        per_block.append(naive_block(s, c, K, pairing=reference == "pairing"))
    expected = torch.tensor(per_block).mean(0)
    got = blockwise_retrieval_faithfulness(sur, img, txt, K, block, reference)
    torch.testing.assert_close(got, expected)
    metric = RetrievalFaithfulness(K, block, reference)
    order = torch.tensor([7, 2, 10, 0, 3, 3, 9, 1, 4, 5, 6, 8, 0])  # shuffled, with duplicates
    for part in order.split(5):
        metric.update(sur[part], img[part], txt[part], part)
    torch.testing.assert_close(metric.compute(), expected)


def test_bad_inputs() -> None:
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match="square"):
        retrieval_faithfulness(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="reference"):
        retrieval_faithfulness(torch.randn(2, 2), torch.randn(2, 2), reference="labels")
    with pytest.raises(ValueError, match=r"`text_embeds` of shape \(3, 2\)"):
        blockwise_retrieval_faithfulness(x, x, torch.randn(2, 2))
    metric = RetrievalFaithfulness()
    with pytest.warns(UserWarning, match="before the ``update``"):
        with pytest.raises(ValueError, match="at least one update"):
            metric.compute()
    with pytest.raises(ValueError, match="image_embeds"):
        metric.update(x, None, x, torch.arange(3))
    with pytest.raises(ValueError, match="integer `indices`"):
        metric.update(x, x, x, torch.arange(2))
