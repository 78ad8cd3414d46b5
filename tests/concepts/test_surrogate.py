"""ConceptSurrogate and its explanations: the weights decompose the embedding (naive loop)."""

from __future__ import annotations

import pytest
import torch

from lico_lightning.concepts import ConceptSurrogate


def test_contributions_match_the_projection_formula_and_sum_to_one() -> None:
    f = ConceptSurrogate(num_concepts=5, embed_dim=3)
    c = torch.rand(4, 5)
    weights, bias_share = f.contributions(c)
    W, b = f.net.weight.detach(), f.net.bias.detach()
    for i in range(4):
        emb = W @ c[i] + b
        unit = emb / emb.norm()
        for k in range(5):
            expected = float(c[i, k] * W[:, k] @ unit / emb.norm())
            assert abs(float(weights[i, k]) - expected) < 1e-6
        assert abs(float(bias_share[i]) - float(b @ unit / emb.norm())) < 1e-6
    torch.testing.assert_close(weights.sum(1) + bias_share, torch.ones(4))


def test_explain_returns_the_top_k_by_absolute_weight_sorted_by_weight() -> None:
    f = ConceptSurrogate(num_concepts=4, embed_dim=2, bias=False)
    with torch.no_grad():
        f.net.weight.copy_(torch.tensor([[1.0, 0.0, -0.5, 0.1], [0.0, 1.0, 0.0, 0.0]]))
    (exp,) = f.explain(torch.tensor([[2.0, 1.0, 1.0, 0.1]]), ["a", "b", "c", "d"], k=3)
    # f = (2 - 0.5 + 0.01, 1) = (1.51, 1); ‖f‖² = 3.2801
    assert exp.labels == ("a", "b", "c")
    assert exp.indices == (0, 1, 2)
    expected = [2 * 1.51 / 3.2801, 1 / 3.2801, -0.5 * 1.51 / 3.2801]
    assert all(abs(w - e) < 1e-6 for w, e in zip(exp.weights, expected))
    assert exp.bias_weight == 0.0
    assert str(exp).startswith("a 0.92, b 0.30, c -0.23")


def test_bad_inputs() -> None:
    f = ConceptSurrogate(num_concepts=3, embed_dim=2)
    with pytest.raises(ValueError, match="3 columns"):
        f(torch.rand(2, 4))
    with pytest.raises(ValueError, match="finite"):
        f.contributions(torch.tensor([[float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="3 labels"):
        f.explain(torch.rand(1, 3), ["a"])
    with pytest.raises(ValueError, match="linear surrogate"):
        ConceptSurrogate(3, 2, hidden_dim=8).explain(torch.rand(1, 3), ["a", "b", "c"])
    sparse = torch.rand(2, 3).to_sparse()
    torch.testing.assert_close(f(sparse), f(sparse.to_dense()))


@pytest.mark.parametrize("hidden_dim", [None, 6])
def test_nonnegative_weights_start_and_stay_nonnegative_under_plain_sgd(hidden_dim) -> None:
    torch.manual_seed(0)
    f = ConceptSurrogate(5, 3, hidden_dim=hidden_dim, nonnegative=True)
    free = ConceptSurrogate(5, 3, hidden_dim=hidden_dim)
    assert bool((f.concept_weight >= 0).all()) and bool((free.concept_weight < 0).any())
    opt = torch.optim.SGD(f.parameters(), lr=0.5)
    target = -torch.ones(8, 3)  # pulls every weight below zero
    left = 0
    for _ in range(3):
        opt.zero_grad()
        ((f(torch.rand(8, 5)) - target) ** 2).mean().backward()
        opt.step()
        left += int((f.concept_weight < 0).sum())  # the step alone leaves the feasible set
        f.project_()
        assert bool((f.concept_weight >= 0).all())
    assert left > 0
    assert bool((f.concept_weight == 0).any())  # projection reaches exact zeros
    before = free.concept_weight.clone()
    free.project_()  # a no-op without the constraint
    assert torch.equal(free.concept_weight, before)


def test_nonnegative_without_bias_explains_with_nonnegative_weights_summing_to_one() -> None:
    f = ConceptSurrogate(6, 4, bias=False, nonnegative=True)
    c = torch.rand(5, 6) * (torch.rand(5, 6) < 0.6)
    weights, bias_share = f.contributions(c)
    assert bool((weights >= 0).all()) and torch.equal(bias_share, torch.zeros(5))
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    with pytest.raises(TypeError, match="`nonnegative` to be a bool"):
        ConceptSurrogate(3, 2, nonnegative=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_concept_scores_are_refused_before_the_layer(bad) -> None:
    """Issue 18 #9: one NaN score made the embedding, the loss and then the weights NaN."""
    surrogate = ConceptSurrogate(5, 8)
    scores = torch.rand(3, 5)
    scores[1, 2] = bad
    with pytest.raises(ValueError, match="Expected `concepts` to be finite"):
        surrogate(scores)
