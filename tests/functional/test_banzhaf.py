"""Weighted Banzhaf interactions (FIxLIP-p) against brute-force references written from the paper."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lico_lightning.functional import (
    all_coalitions,
    approximate_game_values,
    banzhaf_kernel_weights,
    banzhaf_values_from_interactions,
    cross_modal_banzhaf_interactions,
    exact_banzhaf_interactions,
    greedy_subsets,
    interaction_pairs,
    kron_normal_equations,
    model_agnostic_banzhaf_interactions,
    normal_equations,
    sample_coalitions,
    select_clique,
    solve_interactions,
    split_budget,
)

# ----------------------------------------------------------------------------- references


def subsets(n: int) -> list[frozenset[int]]:
    return [frozenset(c) for k in range(n + 1) for c in itertools.combinations(range(n), k)]


class PolynomialGame:
    """A random multilinear game ν(M) = c + Σ_T c_T [T ⊆ M] with terms up to ``max_order``."""

    def __init__(self, n: int, seed: int, max_order: int = 4, density: float = 0.5) -> None:
        rng = np.random.default_rng(seed)
        self.terms = {}
        for k in range(1, max_order + 1):
            for t in itertools.combinations(range(n), k):
                if rng.random() < density:
                    self.terms[frozenset(t)] = rng.normal() / k
        self.const = rng.normal()

    def __call__(self, m: frozenset[int]) -> float:
        return self.const + sum(c for t, c in self.terms.items() if t <= m)

    def table(self, n: int) -> torch.Tensor:
        """ν on all coalitions, in the bit order of ``all_coalitions`` (term by term)."""
        codes = torch.arange(2**n)
        bits = torch.tensor([sum(1 << i for i in t) for t in self.terms])
        coef = torch.tensor(list(self.terms.values()), dtype=torch.float64)
        present = (codes[:, None] & bits[None, :]) == bits[None, :]  # (2^n, terms)
        return self.const + present.double() @ coef


def polynomial_game(n: int, seed: int, max_order: int = 4, density: float = 0.5) -> PolynomialGame:
    return PolynomialGame(n, seed, max_order, density)


def values_vector(nu, n: int) -> torch.Tensor:
    """ν on all coalitions, in the bit order of ``all_coalitions`` (one call per coalition)."""
    if isinstance(nu, PolynomialGame) and n > 10:
        return nu.table(n)
    out = []
    for code in range(2**n):
        out.append(nu(frozenset(i for i in range(n) if code >> i & 1)))
    return torch.tensor(out, dtype=torch.float64)


def brute_force_fixlip(nu, n: int, p: float, pairs: list[tuple[int, int]] | None = None):
    """Definition 5 directly: weighted least squares over every coalition (dense, numpy)."""
    pairs = list(itertools.combinations(range(n), 2)) if pairs is None else pairs
    rows, ys, ws = [], [], []
    for m in subsets(n):
        rows.append(
            [1.0] + [float(i in m) for i in range(n)] + [float(i in m and j in m) for i, j in pairs]
        )
        ys.append(nu(m))
        ws.append(p ** len(m) * (1 - p) ** (n - len(m)))
    x, y, w = np.array(rows), np.array(ys), np.sqrt(np.array(ws))
    sol = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)[0]
    e2 = np.zeros((n, n))
    for (i, j), v in zip(pairs, sol[1 + n :]):
        e2[i, j] = e2[j, i] = v
    return sol[0], sol[1 : 1 + n], e2


def mobius(nu, n: int) -> dict[frozenset[int], float]:
    return {
        m: sum(
            (-1) ** (len(m) - len(s)) * nu(s)
            for k in range(len(m) + 1)
            for s in map(frozenset, itertools.combinations(m, k))
        )
        for m in subsets(n)
    }


def weighted_banzhaf_interaction_index(nu, n: int, p: float) -> np.ndarray:
    """Σ_{T ⊇ {i,j}} p^{|T|-2} a(T) (Marichal & Mathonet), from the Möbius transform."""
    a = mobius(nu, n)
    out = np.zeros((n, n))
    for i, j in itertools.combinations(range(n), 2):
        out[i, j] = out[j, i] = sum(p ** (len(t) - 2) * v for t, v in a.items() if {i, j} <= t)
    return out


def weighted_banzhaf_values(nu, n: int, p: float) -> np.ndarray:
    """Σ_{T ⊆ N∖i} p^{|T|} (1-p)^{n-1-|T|} (ν(T ∪ i) - ν(T)), from marginal contributions."""
    out = np.zeros(n)
    for i in range(n):
        rest = [j for j in range(n) if j != i]
        for k in range(n):
            for t in itertools.combinations(rest, k):
                t = frozenset(t)
                out[i] += p**k * (1 - p) ** (n - 1 - k) * (nu(t | {i}) - nu(t))
    return out


def dense_design(masks: torch.Tensor, pairs: torch.Tensor) -> np.ndarray:
    """Design rows [1, x_i, x_i x_j] written with Python loops (independent of the library)."""
    m = masks.numpy()
    rows = []
    for row in m:
        rows.append(
            [1.0, *row.astype(float), *[float(row[i] and row[j]) for i, j in pairs.tolist()]]
        )
    return np.array(rows)


# ----------------------------------------------------------------------------- exact mode


@pytest.mark.parametrize("p", [0.3, 0.5, 0.8])
@pytest.mark.parametrize("n", [5, 9])
def test_exact_equals_brute_force_weighted_least_squares(n: int, p: float) -> None:
    nu = polynomial_game(n, seed=n)
    e = exact_banzhaf_interactions(values_vector(nu, n), p)
    c, e1, e2 = brute_force_fixlip(nu, n, p)
    np.testing.assert_allclose(e.constant.item(), c, atol=1e-9)
    np.testing.assert_allclose(e.first_order.numpy(), e1, atol=1e-9)
    np.testing.assert_allclose(e.second_order.numpy(), e2, atol=1e-9)


@pytest.mark.parametrize("p", [0.25, 0.5, 0.7])
def test_exact_pairs_are_weighted_banzhaf_interaction_indices(p: float) -> None:
    n = 7
    nu = polynomial_game(n, seed=3)
    e = exact_banzhaf_interactions(values_vector(nu, n), p)
    np.testing.assert_allclose(
        e.second_order.numpy(), weighted_banzhaf_interaction_index(nu, n, p), atol=1e-9
    )


@pytest.mark.parametrize("p", [0.3, 0.6])
def test_theorem1_first_order_conversion(p: float) -> None:
    n = 8
    nu = polynomial_game(n, seed=11)
    e = exact_banzhaf_interactions(values_vector(nu, n), p)
    phi = banzhaf_values_from_interactions(e.first_order, e.second_order, p)

    # Theorem 1: the weighted Banzhaf values of the 2-additive approximation ν̂ ...
    def nu_hat(m: frozenset[int]) -> float:
        x = torch.tensor([[i in m for i in range(n)]])
        return approximate_game_values(x, e.constant, e.first_order, e.second_order).item()

    np.testing.assert_allclose(phi.numpy(), weighted_banzhaf_values(nu_hat, n, p), atol=1e-9)
    # ... which for the exact fit are also those of ν (nested weighted projections)
    np.testing.assert_allclose(phi.numpy(), weighted_banzhaf_values(nu, n, p), atol=1e-9)
    # and equal the first-order-only fit (interactions="none")
    first = exact_banzhaf_interactions(
        values_vector(nu, n), p, pairs=interaction_pairs(n, kind="none")
    )
    np.testing.assert_allclose(phi.numpy(), first.first_order.numpy(), atol=1e-9)


def test_two_additive_game_is_recovered_for_any_p() -> None:
    n = 6
    gen = torch.Generator().manual_seed(1)
    e1 = torch.randn(n, generator=gen, dtype=torch.float64)
    e2 = torch.randn(n, n, generator=gen, dtype=torch.float64).triu(1)
    e2 = e2 + e2.T
    values = approximate_game_values(all_coalitions(n), 0.7, e1, e2)
    for p in (0.1, 0.5, 0.9):
        e = exact_banzhaf_interactions(values, p)
        torch.testing.assert_close(e.first_order, e1, atol=1e-10, rtol=0)
        torch.testing.assert_close(e.second_order, e2, atol=1e-10, rtol=0)


def test_approximate_game_values_matches_loop() -> None:
    n = 6
    gen = torch.Generator().manual_seed(2)
    e1 = torch.randn(n, generator=gen, dtype=torch.float64)
    e2 = torch.randn(n, n, generator=gen, dtype=torch.float64).triu(1)
    e2 = e2 + e2.T
    masks = torch.rand(3, 10, n, generator=gen) < 0.5
    got = approximate_game_values(masks, 0.3, e1, e2)
    for b in range(3):
        for r in range(10):
            m = [i for i in range(n) if masks[b, r, i]]
            want = (
                0.3 + sum(e1[i] for i in m) + sum(e2[i, j] for i, j in itertools.combinations(m, 2))
            )
            assert abs(got[b, r].item() - float(want)) < 1e-12


# ----------------------------------------------------------------------------- factors == dense


@pytest.mark.parametrize(
    "kind,clique",
    [
        ("all", None),
        ("cross", None),
        ("none", None),
        ("all", [0, 2, 3, 6, 8]),
        ("cross", [1, 2, 7, 8]),
    ],
)
def test_kron_normal_equations_equal_dense_solve(kind: str, clique) -> None:
    n_i, n_t, m_i, m_t = 6, 4, 90, 50
    gen = torch.Generator().manual_seed(5)
    mi = torch.rand(m_i, n_i, generator=gen) < 0.5
    mt = torch.cat([all_coalitions(n_t), torch.rand(m_t - 2**n_t, n_t, generator=gen) < 0.5])
    wi = torch.rand(m_i, generator=gen, dtype=torch.float64)
    wt = torch.rand(m_t, generator=gen, dtype=torch.float64)
    y = torch.randn(m_i, m_t, generator=gen, dtype=torch.float64)
    cl = None
    if clique is not None:
        cl = torch.zeros(n_i + n_t, dtype=torch.bool)
        cl[clique] = True
    pairs = interaction_pairs(n_i, n_t, kind=kind, clique=cl)
    g, r = kron_normal_equations(mi, wi, mt, wt, y, pairs)
    got = solve_interactions(g, r, n_i + n_t, pairs)

    # dense reference: every (image, text) combination as a row, weights w_I·w_T
    joint = torch.cat([mi.repeat_interleave(m_t, 0), mt.repeat(m_i, 1)], 1)
    x = dense_design(joint, pairs)
    w = (wi[:, None] * wt[None, :]).flatten().numpy()
    yy = y.flatten().numpy()
    gram = x.T @ (x * w[:, None])
    np.testing.assert_allclose(g.numpy(), gram, rtol=1e-10, atol=1e-12)
    sol = np.linalg.solve(gram, x.T @ (w * yy))
    np.testing.assert_allclose(got.constant.item(), sol[0], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(
        got.first_order.numpy(), sol[1 : 1 + n_i + n_t], rtol=1e-8, atol=1e-8
    )
    pv = got.second_order[pairs[:, 0], pairs[:, 1]].numpy()
    np.testing.assert_allclose(pv, sol[1 + n_i + n_t :], rtol=1e-8, atol=1e-8)


def test_normal_equations_in_chunks_equal_dense() -> None:
    n = 7
    gen = torch.Generator().manual_seed(6)
    masks = torch.rand(300, n, generator=gen) < 0.4
    w = torch.rand(300, generator=gen, dtype=torch.float64)
    y = torch.randn(300, generator=gen, dtype=torch.float64)
    pairs = interaction_pairs(n)
    g, r = normal_equations(masks, w, y, pairs, chunk_size=7)
    x = dense_design(masks, pairs)
    np.testing.assert_allclose(g.numpy(), x.T @ (x * w.numpy()[:, None]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.numpy(), x.T @ (w * y).numpy(), rtol=1e-12, atol=1e-12)


def test_ridge_matches_dense_ridge_and_leaves_constant_alone() -> None:
    n = 4
    masks, w = all_coalitions(n), torch.full((16,), 1 / 16, dtype=torch.float64)
    y = torch.randn(16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pairs = interaction_pairs(n)
    g, r = normal_equations(masks, w, y, pairs)
    got = solve_interactions(g, r, n, pairs, ridge=0.1)
    d = np.eye(g.shape[0]) * 0.1
    d[0, 0] = 0
    sol = np.linalg.solve(g.numpy() + d, r.numpy())
    np.testing.assert_allclose(got.first_order.numpy(), sol[1 : 1 + n], atol=1e-10)
    np.testing.assert_allclose(got.constant.item(), sol[0], atol=1e-10)


# ----------------------------------------------------------------------------- estimators


def test_cross_modal_estimator_converges_to_exact() -> None:
    n_i, n_t, p = 9, 7, 0.6
    nu = polynomial_game(n_i + n_t, seed=21, max_order=3, density=0.3)
    table = values_vector(nu, n_i + n_t)
    exact = exact_banzhaf_interactions(table, p)

    def game(mi: torch.Tensor, mt: torch.Tensor) -> torch.Tensor:
        code_i = (mi.long() << torch.arange(n_i)).sum(-1)
        code_t = (mt.long() << torch.arange(n_i, n_i + n_t)).sum(-1)
        return table[code_i[:, None] + code_t[None, :]]

    errors = []
    for split in [(80, 45), (250, 80), (500, 120)]:
        errs = []
        for seed in range(3):
            e = cross_modal_banzhaf_interactions(
                game,
                n_i,
                n_t,
                p=p,
                budget_split=split,
                generator=torch.Generator().manual_seed(seed),
            )
            errs.append((e.second_order - exact.second_order).square().mean().sqrt().item())
        errors.append(float(np.mean(errs)))
    assert errors[0] > errors[1] > errors[2]
    # enumerating both modalities is exact
    e = cross_modal_banzhaf_interactions(game, n_i, n_t, p=p, budget_split=(2**n_i, 2**n_t))
    torch.testing.assert_close(e.second_order, exact.second_order, atol=1e-9, rtol=0)
    torch.testing.assert_close(e.first_order, exact.first_order, atol=1e-9, rtol=0)


def test_model_agnostic_estimator_converges_to_exact() -> None:
    n, p = 10, 0.4
    nu = polynomial_game(n, seed=4, max_order=3, density=0.4)
    table = values_vector(nu, n)
    exact = exact_banzhaf_interactions(table, p)

    def game(m: torch.Tensor) -> torch.Tensor:
        return table[(m.long() << torch.arange(n)).sum(-1)]

    errors = []
    for budget in [120, 400, 1000]:
        errs = []
        for seed in range(3):
            e = model_agnostic_banzhaf_interactions(
                game, n, p=p, budget=budget, generator=torch.Generator().manual_seed(seed)
            )
            errs.append((e.second_order - exact.second_order).square().mean().sqrt().item())
        errors.append(float(np.mean(errs)))
    assert errors[0] > errors[1] > errors[2]
    e = model_agnostic_banzhaf_interactions(game, n, p=p, budget=2**n)
    torch.testing.assert_close(e.second_order, exact.second_order, atol=1e-9, rtol=0)


def test_two_step_filtering_fits_pairs_inside_the_clique_only() -> None:
    n_i, n_t, p = 8, 6, 0.5
    nu = polynomial_game(n_i + n_t, seed=8, max_order=2, density=0.6)
    table = values_vector(nu, n_i + n_t)

    def game(mi: torch.Tensor, mt: torch.Tensor) -> torch.Tensor:
        code_i = (mi.long() << torch.arange(n_i)).sum(-1)
        code_t = (mt.long() << torch.arange(n_i, n_i + n_t)).sum(-1)
        return table[code_i[:, None] + code_t[None, :]]

    split = (2**n_i, 2**n_t)
    e = cross_modal_banzhaf_interactions(game, n_i, n_t, p=p, budget_split=split, clique_size=9)
    first = cross_modal_banzhaf_interactions(
        game, n_i, n_t, p=p, budget_split=split, interactions="none"
    )
    # clique: k_T = max(5, ceil(9·6/14)) = 5 text players, k_I = 4 image players by |e_i|
    want = torch.zeros(n_i + n_t, dtype=torch.bool)
    want[first.first_order[:n_i].abs().argsort(descending=True)[:4]] = True
    want[n_i + first.first_order[n_i:].abs().argsort(descending=True)[:5]] = True
    assert torch.equal(e.clique, want)
    outside = ~(want[:, None] & want[None, :])
    assert bool((e.second_order[outside] == 0).all())
    # inside the clique: the exact fit restricted to clique pairs
    pairs = [(i, j) for i, j in itertools.combinations(range(n_i + n_t), 2) if want[i] and want[j]]
    _, e1, e2 = brute_force_fixlip(nu, n_i + n_t, p, pairs)
    np.testing.assert_allclose(e.second_order.numpy(), e2, atol=1e-9)
    np.testing.assert_allclose(e.first_order.numpy(), e1, atol=1e-9)


def test_sample_coalitions_distribution_and_enumeration() -> None:
    gen = torch.Generator().manual_seed(0)
    masks, w = sample_coalitions(16, 20000, 0.3, generator=gen)
    assert masks.shape == (20000, 16) and masks.dtype == torch.bool
    torch.testing.assert_close(w, torch.full((20000,), 1 / 20000, dtype=torch.float64))
    assert abs(masks.float().mean().item() - 0.3) < 0.01  # Bernoulli(p) per player
    sizes = masks.sum(-1).double()  # size ~ Binomial(16, 0.3)
    assert abs(sizes.var().item() - 16 * 0.3 * 0.7) < 0.15
    # same seed, same coalitions; the global RNG is not consumed
    state = torch.random.get_rng_state()
    again, _ = sample_coalitions(16, 20000, 0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, masks)
    assert torch.equal(torch.random.get_rng_state(), state)
    # m >= 2^n: all coalitions with their exact weights
    masks, w = sample_coalitions(3, 8, 0.3)
    assert masks.shape == (8, 3) and len({tuple(r) for r in masks.tolist()}) == 8
    want = [0.3 ** int(r.sum()) * 0.7 ** (3 - int(r.sum())) for r in masks]
    torch.testing.assert_close(w, torch.tensor(want, dtype=torch.float64))
    torch.testing.assert_close(banzhaf_kernel_weights(masks, 0.3), w)


def test_split_budget_matches_the_reference_heuristic() -> None:
    def reference(budget: int, n_i: int, n_t: int) -> tuple[int, int]:
        if n_t < n_i:
            t = min(2**n_t, math.ceil(max(4, math.sqrt(budget) * n_t / n_i)))
            return budget // t, t
        i = min(2**n_i, math.ceil(max(4, math.sqrt(budget) * n_i / n_t)))
        return i, budget // i

    for budget, n_i, n_t in [
        (2**21, 49, 20),
        (2**14, 196, 30),
        (1000, 3, 40),
        (64, 4, 2),
        (10**6, 10, 10),
    ]:
        assert split_budget(budget, n_i, n_t) == reference(budget, n_i, n_t)
    assert split_budget(2**21, 49, 20) == (3542, 592)


def test_interaction_pairs_and_clique_selection_match_naive() -> None:
    assert interaction_pairs(3, 2).tolist() == [
        list(t) for t in itertools.combinations(range(5), 2)
    ]
    assert interaction_pairs(3, 2, kind="cross").tolist() == [
        [i, j] for i in range(3) for j in (3, 4)
    ]
    assert interaction_pairs(3, 2, kind="none").shape == (0, 2)
    gen = torch.Generator().manual_seed(3)
    e1 = torch.randn(30, generator=gen, dtype=torch.float64)
    for n_i, n_t, k in [(20, 10, 12), (25, 5, 8), (27, 3, 10), (10, 20, 6)]:
        got = select_clique(e1, n_i, n_t, k)
        k_t = min(n_t, max(5, math.ceil(k * n_t / (n_i + n_t))))
        k_i = min(n_i, k - k_t)
        img = sorted(range(n_i), key=lambda i: -abs(e1[i].item()))[:k_i]
        txt = sorted(range(n_i, n_i + n_t), key=lambda i: -abs(e1[i].item()))[:k_t]
        assert sorted(got.nonzero().flatten().tolist()) == sorted(img + txt)


# ----------------------------------------------------------------------------- greedy search


def naive_greedy(e0: float, e1: list[float], e2: list[list[float]], maximize: bool):
    """The reference algorithm with Python sets and dicts: grow from every start node."""
    n = len(e1)
    sign = 1 if maximize else -1
    best: dict[int, tuple[float, frozenset[int]]] = {0: (e0, frozenset())}
    for s in range(n):
        subset, value = {s}, e1[s]
        cands = {1: (value, frozenset(subset))}
        for k in range(2, n + 1):
            gains = {}
            for j in range(n):
                if j not in subset:
                    gains[j] = sign * (e1[j] + sum(e2[i][j] for i in subset))
            j = max(gains, key=lambda q: (gains[q], -q))
            subset.add(j)
            value += sign * gains[j]
            cands[k] = (value, frozenset(subset))
        for k, (v, sub) in cands.items():
            if k not in best or sign * (e0 + v) > sign * best[k][0]:
                best[k] = (e0 + v, sub)
    return best


@pytest.mark.parametrize("maximize", [True, False])
@pytest.mark.parametrize("n,seed", [(5, 0), (8, 1), (11, 2)])
def test_greedy_subsets_match_naive_dict_implementation(n: int, seed: int, maximize: bool) -> None:
    gen = torch.Generator().manual_seed(seed)
    e1 = torch.randn(n, generator=gen, dtype=torch.float64)
    e2 = torch.randn(n, n, generator=gen, dtype=torch.float64).triu(1)
    e2 = e2 + e2.T
    masks, values = greedy_subsets(e1, e2, 0.5, maximize=maximize)
    ref = naive_greedy(0.5, e1.tolist(), e2.tolist(), maximize)
    for k in range(n + 1):
        assert set(masks[k].nonzero().flatten().tolist()) == set(ref[k][1])
        assert abs(values[k].item() - ref[k][0]) < 1e-12
        # values are ν̂ of the returned subsets
        v = approximate_game_values(masks[k : k + 1], 0.5, e1, e2).item()
        assert abs(v - values[k].item()) < 1e-12


def test_greedy_is_exact_without_pairs_and_bounded_by_brute_force() -> None:
    n = 9
    gen = torch.Generator().manual_seed(4)
    e1 = torch.randn(n, generator=gen, dtype=torch.float64)
    masks, _ = greedy_subsets(e1, torch.zeros(n, n, dtype=torch.float64))
    for k in range(n + 1):  # Proposition 1: top-k coefficients
        assert set(masks[k].nonzero().flatten().tolist()) == set(
            e1.argsort(descending=True)[:k].tolist()
        )
    e2 = torch.randn(n, n, generator=gen, dtype=torch.float64).triu(1)
    e2 = e2 + e2.T
    all_m = all_coalitions(n)
    all_v = approximate_game_values(all_m, 0.0, e1, e2)
    sizes = all_m.sum(-1)
    _, vmax = greedy_subsets(e1, e2, maximize=True)
    _, vmin = greedy_subsets(e1, e2, maximize=False)
    for k in range(n + 1):
        assert vmax[k] <= all_v[sizes == k].max() + 1e-12
        assert vmin[k] >= all_v[sizes == k].min() - 1e-12
    assert vmax[1] == all_v[sizes == 1].max()  # size 1 is searched exhaustively


def test_greedy_with_subset_of_starts() -> None:
    n = 6
    gen = torch.Generator().manual_seed(9)
    e1 = torch.randn(n, generator=gen, dtype=torch.float64)
    e2 = torch.randn(n, n, generator=gen, dtype=torch.float64).triu(1)
    e2 = e2 + e2.T
    masks, _ = greedy_subsets(e1, e2, starts=torch.tensor([2]))
    for k in range(1, n + 1):
        assert masks[k, 2]  # every subset grows from the single start
        assert bool((masks[k] >= masks[k - 1]).all())


# ----------------------------------------------------------------------------- errors


def test_errors() -> None:
    game = lambda mi, mt: torch.zeros(mi.shape[0], mt.shape[0], dtype=torch.float64)  # noqa: E731
    for p in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ValueError, match=r"`p` in \(0, 1\)"):
            cross_modal_banzhaf_interactions(game, 3, 3, p=p, budget=64)
        with pytest.raises(ValueError, match=r"`p` in \(0, 1\)"):
            exact_banzhaf_interactions(torch.zeros(8), p)
    with pytest.raises(ValueError, match=r"budget large enough.*budget >= \d+"):
        cross_modal_banzhaf_interactions(game, 49, 20, budget=2**14)
    with pytest.raises(ValueError, match="at least 2416 coalitions"):
        model_agnostic_banzhaf_interactions(lambda m: m.double().sum(-1), 49, 20, budget=1000)
    with pytest.raises(ValueError, match="2\\^n game values"):
        exact_banzhaf_interactions(torch.zeros(6), 0.5)
    with pytest.raises(ValueError, match="at most 20 players"):
        all_coalitions(21)
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        cross_modal_banzhaf_interactions(
            lambda mi, mt: torch.zeros(3, 4, dtype=torch.float64), 3, 3, budget=64
        )
    with pytest.raises(ValueError, match="interactions"):
        cross_modal_banzhaf_interactions(game, 3, 3, budget=64, interactions="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_text"):
        model_agnostic_banzhaf_interactions(lambda m: m.double().sum(-1), 4, interactions="cross")
    with pytest.raises(TypeError, match="bool"):
        normal_equations(
            torch.ones(3, 2),
            torch.ones(3, dtype=torch.float64),
            torch.ones(3, dtype=torch.float64),
            interaction_pairs(2),
        )
    with pytest.raises(ValueError, match="0 <= i < j"):
        normal_equations(
            torch.ones(3, 2, dtype=torch.bool),
            torch.ones(3, dtype=torch.float64),
            torch.ones(3, dtype=torch.float64),
            torch.tensor([[1, 0]]),
        )
    # singular: a pair that is never present together
    masks = torch.tensor([[True, False], [False, True], [False, False], [True, False]])
    g, r = normal_equations(
        masks,
        torch.full((4,), 0.25, dtype=torch.float64),
        torch.randn(4, dtype=torch.float64),
        interaction_pairs(2),
    )
    with pytest.raises(ValueError, match=r"singular.*ridge"):
        solve_interactions(g, r, 2, interaction_pairs(2))
    with pytest.raises(ValueError, match="ridge"):
        solve_interactions(g, r, 2, interaction_pairs(2), ridge=-1.0)
    with pytest.raises(ValueError, match=r"same shape|\(\.\.\., 3\)"):
        approximate_game_values(
            torch.ones(2, 4, dtype=torch.bool), 0.0, torch.zeros(3), torch.zeros(3, 3)
        )
