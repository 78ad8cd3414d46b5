"""The interaction contraction against a loop over tokens and embedding dims."""

from __future__ import annotations

import pytest
import torch

from lico_lightning.functional import integration_points, token_interactions


def test_token_interactions_match_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    ua, ub = torch.randn(2, 3, 4, generator=gen), torch.randn(3, 5, 4, generator=gen)
    got = token_interactions(ua, ub, scale=2.5, all_pairs=True)
    want = torch.zeros(2, 3, 3, 5)
    for i in range(2):
        for j in range(3):
            for s in range(3):
                for t in range(5):
                    want[i, j, s, t] = 2.5 * sum(ua[i, s, k] * ub[j, t, k] for k in range(4))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(token_interactions(ua, ub[:2], 2.5), want[[0, 1], [0, 1]])


def test_errors_and_points() -> None:
    assert integration_points(2).tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match="n_steps"):
        integration_points(0)
    with pytest.raises(ValueError, match="same batch size"):
        token_interactions(torch.rand(2, 3, 4), torch.rand(3, 3, 4))
    with pytest.raises(ValueError, match="embedding width"):
        token_interactions(torch.rand(2, 3, 4), torch.rand(2, 3, 5))
