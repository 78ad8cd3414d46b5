"""The sampling estimators: cross-modal (Definition 7) and model-agnostic (Definition 6)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lico_lightning._validation import (
    check_choice,
    check_int,
    check_probability,
    check_tensor,
)
from lico_lightning.functional.banzhaf._coalitions import (
    sample_coalitions,
    split_budget,
)
from lico_lightning.functional.banzhaf._common import (
    _KINDS,
    MAX_EXACT_PLAYERS,
    BanzhafInteractions,
    InteractionKind,
)
from lico_lightning.functional.banzhaf._least_squares import (
    interaction_pairs,
    kron_normal_equations,
    normal_equations,
    solve_interactions,
)
from lico_lightning.functional.banzhaf._subsets import select_clique


def required_coalitions(
    n_image: int,
    n_text: int,
    *,
    interactions: InteractionKind = "all",
    clique_size: int | None = None,
) -> tuple[int, int, int]:
    """Basis sizes ``(F_I, F_T, |basis|)``: the fewest image, text and joint coalitions a fit needs."""
    n = n_image + n_text
    if clique_size is not None and clique_size < n and interactions != "none":
        if n_text == 0:
            k_image, k_text = clique_size, 0
        else:
            k_text = min(n_text, max(5, math.ceil(clique_size * n_text / n)))
            k_image = min(n_image, clique_size - k_text)
    else:
        k_image, k_text = n_image, n_text
    within = interactions == "all"
    f_i = 1 + n_image + (math.comb(k_image, 2) if within else 0)
    f_t = 1 + n_text + (math.comb(k_text, 2) if within else 0)
    cross = k_image * k_text if interactions != "none" else 0
    total = 1 + n + cross + (math.comb(k_image, 2) + math.comb(k_text, 2) if within else 0)
    return f_i, f_t, total


def cross_modal_banzhaf_interactions(
    game: Callable[[Tensor, Tensor], Tensor],
    n_image: int,
    n_text: int,
    *,
    p: float = 0.5,
    budget: int = 2**14,
    budget_split: tuple[int, int] | None = None,
    interactions: InteractionKind = "all",
    clique_size: int | None = None,
    ridge: float = 0.0,
    generator: torch.Generator | None = None,
) -> BanzhafInteractions:
    """FIxLIP-p with the cross-modal estimator (Definition 7), solved from per-modality factors.

    Samples ``m_I`` image and ``m_T`` text coalitions from :math:`\\mathbb{P}_{p,I}`,
    :math:`\\mathbb{P}_{p,T}` (:func:`split_budget`), asks ``game`` for all ``m_I × m_T``
    values at once and minimises

    .. math::
        \\hat{\\mathfrak{F}}_p^{(m_I, m_T)} = \\frac{1}{m_I m_T} \\sum_{a, b}
        \\bigl(\\nu(M_I^{(a)} \\cup M_T^{(b)}) - \\hat\\nu_e(M_I^{(a)} \\cup M_T^{(b)})\\bigr)^2

    through :func:`kron_normal_equations`. With ``clique_size`` and more players than that,
    two-step filtering (§3.3) first fits first-order terms on the same values, keeps a clique
    (:func:`select_clique`) and then fits the pairs inside it.

    Args:
        game: ``game(masks_image (m_I, n_I) bool, masks_text (m_T, n_T) bool) -> (m_I, m_T)``.
        n_image: image players :math:`n_I`.
        n_text: text players :math:`n_T`.
        p: probability that a player is present, in (0, 1).
        budget: number of joint coalitions :math:`m \\approx m_I m_T`.
        budget_split: explicit ``(m_I, m_T)`` instead of :func:`split_budget`.
        interactions: fit ``"all"`` pairs, only ``"cross"``-modal pairs, or ``"none"``.
        clique_size: two-step filtering clique size (``None``: fit every pair).
        ridge: see :func:`solve_interactions`.
        generator: seeded CPU generator for sampling.

    Raises:
        ValueError: if the budget is too small for the basis (before calling ``game``).

    Example:
        >>> def game(mi, mt):  # ν = 2·x0 + x0·x2 - x1·x3 over (2 image, 2 text) players
        ...     mi, mt = mi.double(), mt.double()
        ...     return 2 * mi[:, :1] + mi[:, :1] * mt[:, 0] - mi[:, 1:2] * mt[:, 1]
        >>> e = cross_modal_banzhaf_interactions(game, 2, 2, p=0.7, budget=16)
        >>> (e.first_order.round(decimals=6) + 0.0).tolist(), round(e.second_order[0, 2].item(), 6)
        ([2.0, 0.0, 0.0, 0.0], 1.0)
    """
    check_int("n_image", n_image, 1)
    check_int("n_text", n_text, 1)
    check_probability("p", p)
    check_choice("interactions", interactions, _KINDS)
    if clique_size is not None:
        check_int("clique_size", clique_size, 2)
    if budget_split is None:
        m_i, m_t = split_budget(budget, n_image, n_text)
    else:
        if len(budget_split) != 2:
            raise ValueError(f"Expected `budget_split` = (m_I, m_T), but got {budget_split!r}.")
        m_i, m_t = budget_split
        check_int("budget_split[0]", m_i, 1)
        check_int("budget_split[1]", m_t, 1)
    f_i, f_t, _ = required_coalitions(
        n_image, n_text, interactions=interactions, clique_size=clique_size
    )
    eff_i = min(m_i, 2**n_image) if n_image <= MAX_EXACT_PLAYERS else m_i
    eff_t = min(m_t, 2**n_text) if n_text <= MAX_EXACT_PLAYERS else m_t
    if eff_i < f_i or eff_t < f_t:
        need = _min_cross_budget(n_image, n_text, f_i, f_t)
        raise ValueError(
            f"Expected a budget large enough for the basis ({f_i} image and {f_t} text features "
            f"need at least {f_i} image and {f_t} text coalitions), but the budget gives "
            f"m_I={m_i}, m_T={m_t}. Use budget >= {need}, a smaller `clique_size`, or "
            "interactions='cross'."
        )
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    masks_i, w_i = sample_coalitions(n_image, m_i, p, generator=gen)
    masks_t, w_t = sample_coalitions(n_text, m_t, p, generator=gen)
    values = game(masks_i, masks_t)
    check_tensor("game(masks_image, masks_text)", values, ndim=2, floating=True)
    if tuple(values.shape) != (masks_i.shape[0], masks_t.shape[0]):
        raise ValueError(
            f"Expected the game to return ({masks_i.shape[0]}, {masks_t.shape[0]}) values, but "
            f"got {tuple(values.shape)}."
        )
    values = values.double()
    dev = values.device
    masks_i, masks_t, w_i, w_t = masks_i.to(dev), masks_t.to(dev), w_i.to(dev), w_t.to(dev)

    def fit(pairs: Tensor) -> BanzhafInteractions:
        g, r = kron_normal_equations(masks_i, w_i, masks_t, w_t, values, pairs)
        return solve_interactions(g, r, n_image + n_text, pairs, ridge=ridge)

    clique = _two_step_clique(fit, n_image, n_text, interactions, clique_size, dev)
    return fit(interaction_pairs(n_image, n_text, kind=interactions, clique=clique))


def model_agnostic_banzhaf_interactions(
    game: Callable[[Tensor], Tensor],
    n_image: int,
    n_text: int = 0,
    *,
    p: float = 0.5,
    budget: int = 2**12,
    interactions: InteractionKind = "all",
    clique_size: int | None = None,
    ridge: float = 0.0,
    generator: torch.Generator | None = None,
    chunk_size: int = 4096,
) -> BanzhafInteractions:
    """FIxLIP-p with the model-agnostic estimator (Definition 6): joint coalitions.

    .. math::
        \\hat{\\mathfrak{F}}_p^{(m)} = \\frac{1}{m} \\sum_{\\ell=1}^m
        \\bigl(\\nu(M^{(\\ell)}) - \\hat\\nu_e(M^{(\\ell)})\\bigr)^2,
        \\quad M^{(\\ell)} \\overset{iid}{\\sim} \\mathbb{P}_p

    (all :math:`2^n` coalitions with their exact weights once ``budget >= 2^n``). The normal
    equations are accumulated in row chunks of ``chunk_size``.

    Args:
        game: ``game(masks (m, n) bool) -> (m,)`` values.
        n_image: image players (or all players of a single-modality game).
        n_text: text players (0 for a single-modality game; ``"cross"`` needs both).
        p, interactions, clique_size, ridge, generator: as in
            :func:`cross_modal_banzhaf_interactions`.
        budget: number of joint coalitions (game evaluations).
        chunk_size: rows of the design matrix built at a time.

    Example:
        >>> game = lambda m: (m[:, 0] & m[:, 1]).double() * 3.0 + m[:, 2].double()
        >>> e = model_agnostic_banzhaf_interactions(game, 3, p=0.5, budget=8)
        >>> (e.first_order.round(decimals=6) + 0.0).tolist(), round(e.second_order[0, 1].item(), 6)
        ([0.0, 0.0, 1.0], 3.0)
    """
    check_int("n_image", n_image, 1)
    check_int("n_text", n_text, 0)
    check_int("budget", budget, 1)
    check_probability("p", p)
    check_choice("interactions", interactions, _KINDS)
    if interactions == "cross" and n_text == 0:
        raise ValueError("Expected `n_text` > 0 for interactions='cross', but got 0.")
    if clique_size is not None:
        check_int("clique_size", clique_size, 2)
    n = n_image + n_text
    _, _, size = required_coalitions(
        n_image, n_text, interactions=interactions, clique_size=clique_size
    )
    eff = min(budget, 2**n) if n <= MAX_EXACT_PLAYERS else budget
    if eff < size:
        raise ValueError(
            f"Expected a budget of at least {size} coalitions for a basis of {size} terms, but "
            f"got budget={budget}."
        )
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    masks, w = sample_coalitions(n, budget, p, generator=gen)
    values = game(masks)
    check_tensor("game(masks)", values, ndim=1, floating=True)
    if values.shape[0] != masks.shape[0]:
        raise ValueError(
            f"Expected the game to return {masks.shape[0]} values, but got {tuple(values.shape)}."
        )
    values = values.double()
    dev = values.device
    masks, w = masks.to(dev), w.to(dev)

    def fit(pairs: Tensor) -> BanzhafInteractions:
        g, r = normal_equations(masks, w, values, pairs, chunk_size=chunk_size)
        return solve_interactions(g, r, n, pairs, ridge=ridge)

    clique = _two_step_clique(fit, n_image, n_text, interactions, clique_size, dev)
    return fit(interaction_pairs(n_image, n_text, kind=interactions, clique=clique))


def _two_step_clique(
    fit: Callable[[Tensor], BanzhafInteractions],
    n_image: int,
    n_text: int,
    interactions: str,
    clique_size: int | None,
    device: torch.device,
) -> Tensor | None:
    n = n_image + n_text
    if clique_size is None or clique_size >= n or interactions == "none":
        return None
    first = fit(torch.empty(0, 2, dtype=torch.long, device=device))
    return select_clique(first.first_order, n_image, n_text, clique_size)


def _min_cross_budget(n_image: int, n_text: int, f_i: int, f_t: int) -> int:
    """A budget (near the smallest) whose :func:`split_budget` meets the per-modality counts.

    Doubling then bisection; the split is not exactly monotone in the budget, so the result is
    a sufficient budget, not always the minimum.
    """

    def ok(b: int) -> bool:
        m_i, m_t = split_budget(b, n_image, n_text)
        m_i = min(m_i, 2**n_image) if n_image <= MAX_EXACT_PLAYERS else m_i
        m_t = min(m_t, 2**n_text) if n_text <= MAX_EXACT_PLAYERS else m_t
        return m_i >= f_i and m_t >= f_t

    hi = 4
    while not ok(hi):
        hi *= 2
        if hi > 2**62:
            return hi
    lo = hi // 2
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi
