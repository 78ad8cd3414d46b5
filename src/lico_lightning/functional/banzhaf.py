r"""Weighted Banzhaf interactions (FIxLIP-p) as weighted least squares, in pure torch.

A game :math:`\nu: 2^N \to \mathbb{R}` over :math:`n = n_I + n_T` players (image players first,
then text players) is approximated by the 2-additive game

.. math::
    \hat\nu_e(M) = e_0 + \sum_{i \in M} e_i + \sum_{\{i,j\} \subseteq M} e_{ij},

and FIxLIP-p (Baniecki et al., Definitions 4–5) is the explanation that minimises the
p-faithfulness

.. math::
    \mathfrak{F}_p(\nu, \hat\nu_e) = \sum_{M \subseteq N} p^{|M|} (1-p)^{n-|M|}
        \bigl(\nu(M) - \hat\nu_e(M)\bigr)^2
    = \mathbb{E}_{M \sim \mathbb{P}_p}\bigl[(\nu(M) - \hat\nu_e(M))^2\bigr],

i.e. a weighted least-squares problem whose design matrix has one row per coalition and one
column per basis element (constant, players, pairs). Its pairs are the weighted Banzhaf
interaction indices :math:`\sum_{T \supseteq \{i,j\}} p^{|T|-2} a(T)` (:math:`a` = Möbius
transform), and Theorem 1 turns it into the weighted Banzhaf values
:math:`e_i + p \sum_{j \neq i} e_{ij}`.

Because :math:`\mathbb{P}_p` is a product of Bernoulli(p) distributions, it factorises over the
modalities, :math:`\mathbb{P}_p = \mathbb{P}_{p,I} \otimes \mathbb{P}_{p,T}`. The cross-modal
estimator (Definition 7) samples :math:`m_I` image and :math:`m_T` text coalitions and uses all
:math:`m_I m_T` combinations. Every basis feature is a product of an image feature
:math:`\phi_I(u) \in \{1, u_i, u_i u_j\}` and a text feature :math:`\phi_T(v)`, and the weights
are products too, so the normal equations are entries of a Kronecker product:

.. math::
    G_{(\alpha\beta),(\alpha'\beta')} = (\Phi_I^\top W_I \Phi_I)_{\alpha\alpha'}
        (\Phi_T^\top W_T \Phi_T)_{\beta\beta'}, \qquad
    r_{(\alpha\beta)} = (\Phi_I^\top W_I Y W_T \Phi_T)_{\alpha\beta},

with :math:`Y` the :math:`m_I \times m_T` matrix of game values. The dense
``(m_I·m_T) × |basis|`` design matrix is never built (:func:`kron_normal_equations`).

Sampling follows the reference implementation: a coalition's size is Binomial(n, p) and the
coalition is uniform among those of that size, which is the same as keeping every player
independently with probability p (what :func:`sample_coalitions` does). When the budget of a
modality reaches :math:`2^n` its coalitions are enumerated with their exact weights instead.

References:
    H. Baniecki et al., *Explaining Similarity in Vision–Language Encoders with Weighted
    Banzhaf Interactions* (FIxLIP), §3, Appendix A–B.
    J.-L. Marichal, P. Mathonet, *Weighted Banzhaf power and interaction indexes through
    weighted approximations of games*, EJOR 211 (2011).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from lico_lightning._validation import (
    check_choice,
    check_int,
    check_positive,
    check_probability,
    check_tensor,
)

__all__ = [
    "BanzhafInteractions",
    "all_coalitions",
    "approximate_game_values",
    "banzhaf_kernel_weights",
    "banzhaf_values_from_interactions",
    "cross_modal_banzhaf_interactions",
    "exact_banzhaf_interactions",
    "greedy_subsets",
    "interaction_pairs",
    "kron_normal_equations",
    "model_agnostic_banzhaf_interactions",
    "normal_equations",
    "required_coalitions",
    "sample_coalitions",
    "select_clique",
    "solve_interactions",
    "split_budget",
]

InteractionKind = Literal["all", "cross", "none"]
_KINDS = ("all", "cross", "none")
#: Largest number of players enumerated in exact mode (2^n coalitions).
MAX_EXACT_PLAYERS = 20


class BanzhafInteractions(NamedTuple):
    """A 2-additive explanation :math:`e`.

    Attributes:
        constant: 0-dim, :math:`e_0` (:math:`\\hat\\nu_e(\\emptyset)`).
        first_order: ``(n,)`` :math:`e_i`.
        second_order: ``(n, n)`` symmetric :math:`e_{ij}`, zero diagonal; zero for pairs outside
            the fitted basis.
        clique: ``(n,)`` bool, the players whose pairs were fitted (all True without two-step
            filtering; all False when no pairs were fitted).
    """

    constant: Tensor
    first_order: Tensor
    second_order: Tensor
    clique: Tensor


# --------------------------------------------------------------------------- coalitions
def all_coalitions(n: int, device: torch.device | str | None = None) -> Tensor:
    """Every coalition of ``n`` players, ``(2^n, n)`` bool; row ``c`` holds player ``i`` iff bit ``i`` of ``c`` is set.

    Example:
        >>> all_coalitions(2).int()
        tensor([[0, 0],
                [1, 0],
                [0, 1],
                [1, 1]], dtype=torch.int32)
    """
    check_int("n", n, 0)
    if n > MAX_EXACT_PLAYERS:
        raise ValueError(
            f"Expected at most {MAX_EXACT_PLAYERS} players to enumerate 2^n coalitions, but got {n}."
        )
    codes = torch.arange(2**n, device=device)
    return ((codes[:, None] >> torch.arange(n, device=device)) & 1).bool()


def banzhaf_kernel_weights(masks: Tensor, p: float) -> Tensor:
    """:math:`p^{|M|}(1-p)^{n-|M|}` for every coalition row of ``masks`` ``(m, n)`` → ``(m,)`` float64.

    Example:
        >>> banzhaf_kernel_weights(all_coalitions(2), 0.5)
        tensor([0.2500, 0.2500, 0.2500, 0.2500], dtype=torch.float64)
    """
    check_tensor("masks", masks, ndim=2, nonempty=False)
    check_probability("p", p)
    n = masks.shape[1]
    k = masks.sum(-1).double()
    return torch.exp(k * math.log(p) + (n - k) * math.log1p(-p))


def sample_coalitions(
    n: int, m: int, p: float, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Coalitions from :math:`\\mathbb{P}_p` and their regression weights.

    With ``m < 2^n`` every player joins each of the ``m`` coalitions independently with
    probability ``p`` (size ~ Binomial(n, p), uniform given the size); each coalition weighs
    ``1/m`` (the Monte Carlo estimate of :math:`\\mathfrak{F}_p`, Definition 6). With
    ``m >= 2^n`` all ``2^n`` coalitions are returned with their exact weights
    :math:`p^{|M|}(1-p)^{n-|M|}`, so the fit is exact.

    Args:
        n: number of players.
        m: number of coalitions.
        p: probability that a player is present.
        generator: seeded ``torch.Generator`` (CPU); the global RNG is never used.

    Returns:
        ``masks`` ``(m', n)`` bool (True = present) on the CPU and ``weights`` ``(m',)``
        float64 summing to 1.

    Example:
        >>> masks, w = sample_coalitions(3, 100, 0.5, generator=torch.Generator().manual_seed(0))
        >>> masks.shape, round(float(w.sum()), 6)
        (torch.Size([8, 3]), 1.0)
    """
    check_int("n", n, 1)
    check_int("m", m, 1)
    check_probability("p", p)
    if n <= MAX_EXACT_PLAYERS and m >= 2**n:
        masks = all_coalitions(n)
        return masks, banzhaf_kernel_weights(masks, p)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    masks = torch.rand(m, n, generator=generator, device=generator.device) < p
    return masks.cpu(), torch.full((m,), 1.0 / m, dtype=torch.float64)


def split_budget(budget: int, n_image: int, n_text: int) -> tuple[int, int]:
    """Split a cross-modal budget ``m ≈ m_I · m_T`` between the modalities (FIxLIP, Appendix B.1).

    The smaller modality gets :math:`\\min(2^{n_s}, \\max(4, \\lceil \\sqrt{m}\\, n_s / n_l
    \\rceil))` coalitions and the larger one :math:`\\lfloor m / m_s \\rfloor` (the reference
    implementation; the paper's formula :math:`\\lfloor\\sqrt{m}\\, n_l / n_s\\rfloor` gives
    nearly the same number). A modality whose share reaches :math:`2^n` is enumerated.

    Returns:
        ``(m_I, m_T)``.

    Example:
        >>> split_budget(2**21, 49, 20)
        (3542, 592)
    """
    check_int("budget", budget, 4)
    check_int("n_image", n_image, 1)
    check_int("n_text", n_text, 1)
    small, large = (n_text, n_image) if n_text < n_image else (n_image, n_text)
    m_small = math.ceil(max(4.0, math.sqrt(budget) * small / large))
    m_small = min(m_small, 2**small) if small < 63 else m_small
    m_large = budget // m_small
    return (m_large, m_small) if n_text < n_image else (m_small, m_large)


# --------------------------------------------------------------------------- basis
def interaction_pairs(
    n_image: int,
    n_text: int = 0,
    *,
    kind: InteractionKind = "all",
    clique: Tensor | None = None,
) -> Tensor:
    """Pairs of the explanation basis, ``(P, 2)`` long with ``i < j`` (image players first).

    Args:
        n_image: image players (or all players of a single-modality game).
        n_text: text players (indices ``n_image ... n_image + n_text - 1``).
        kind: ``"all"`` pairs, only ``"cross"``-modal (image, text) pairs, or ``"none"``.
        clique: ``(n,)`` bool, restrict pairs to players inside the clique (two-step filtering).

    Example:
        >>> interaction_pairs(2, 1).tolist()
        [[0, 1], [0, 2], [1, 2]]
        >>> interaction_pairs(2, 1, kind="cross").tolist()
        [[0, 2], [1, 2]]
    """
    check_int("n_image", n_image, 0)
    check_int("n_text", n_text, 0)
    check_choice("kind", kind, _KINDS)
    n = n_image + n_text
    device = None if clique is None else clique.device
    if clique is not None:
        check_tensor("clique", clique, ndim=1, nonempty=False)
        if clique.dtype != torch.bool or clique.shape[0] != n:
            raise ValueError(
                f"Expected `clique` to be a ({n},) bool tensor, but got {clique.dtype} "
                f"{tuple(clique.shape)}."
            )
    if kind == "none" or n < 2:
        return torch.empty(0, 2, dtype=torch.long, device=device)
    pairs = torch.triu_indices(n, n, offset=1, device=device).T
    if kind == "cross":
        pairs = pairs[(pairs[:, 0] < n_image) & (pairs[:, 1] >= n_image)]
    if clique is not None:
        pairs = pairs[clique[pairs[:, 0]] & clique[pairs[:, 1]]]
    return pairs.contiguous()


def _design(masks: Tensor, pairs: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """Rows ``[1, M, M_i M_j for pairs]`` of the design matrix for coalitions ``masks`` ``(m, n)``."""
    ones = masks.new_ones(masks.shape[0], 1)
    prod = masks[:, pairs[:, 0]] & masks[:, pairs[:, 1]]
    return torch.cat([ones, masks, prod], dim=1).to(dtype)


def normal_equations(
    masks: Tensor, weights: Tensor, values: Tensor, pairs: Tensor, *, chunk_size: int = 4096
) -> tuple[Tensor, Tensor]:
    """Weighted least-squares normal equations for joint coalitions (model-agnostic / exact).

    .. math::
        G = \\sum_\\ell w_\\ell\\, z(M_\\ell) z(M_\\ell)^\\top, \\qquad
        r = \\sum_\\ell w_\\ell\\, \\nu(M_\\ell)\\, z(M_\\ell),

    with :math:`z(M) = [1, (1_{i \\in M})_i, (1_{i,j \\in M})_{(i,j) \\in \\text{pairs}}]`, in row
    chunks (at most ``chunk_size × |basis|`` design entries exist at a time).

    Args:
        masks: ``(m, n)`` bool coalitions.
        weights: ``(m,)`` regression weights.
        values: ``(m,)`` game values.
        pairs: ``(P, 2)`` basis pairs.
        chunk_size: rows per chunk.

    Returns:
        ``G`` ``(1+n+P, 1+n+P)`` and ``r`` ``(1+n+P,)`` in float64.
    """
    _check_masks("masks", masks)
    m, n = masks.shape
    weights, values = _check_rows(m, weights=weights, values=values)
    pairs = _check_pairs(pairs, n)
    check_int("chunk_size", chunk_size, 1)
    dev = values.device
    masks, pairs = masks.to(dev), pairs.to(dev)
    size = 1 + n + pairs.shape[0]
    gram = torch.zeros(size, size, dtype=torch.float64, device=dev)
    rhs = torch.zeros(size, dtype=torch.float64, device=dev)
    for start in range(0, m, chunk_size):
        z = _design(masks[start : start + chunk_size], pairs)
        wz = z * weights[start : start + chunk_size, None]
        gram += wz.T @ z
        rhs += wz.T @ values[start : start + chunk_size]
    return gram, rhs


def kron_normal_equations(
    masks_image: Tensor,
    weights_image: Tensor,
    masks_text: Tensor,
    weights_text: Tensor,
    values: Tensor,
    pairs: Tensor,
) -> tuple[Tensor, Tensor]:
    """Normal equations of the cross-modal estimator from per-modality factors (Definition 7).

    The design row of the joint coalition :math:`(u_a, v_b)` is a sub-vector of
    :math:`\\phi_I(u_a) \\otimes \\phi_T(v_b)` and its weight is :math:`w^I_a w^T_b`, so

    .. math::
        G = \\bigl[(\\Phi_I^\\top W_I \\Phi_I) \\otimes (\\Phi_T^\\top W_T \\Phi_T)\\bigr]_{S,S},
        \\qquad r = \\bigl[\\Phi_I^\\top W_I Y W_T \\Phi_T\\bigr]_{S},

    where :math:`\\phi_I = [1, u, (u_i u_j)_{\\text{image pairs}}]` (likewise for text) and
    :math:`S` selects the basis. Cost :math:`O(m_I F_I^2 + m_T F_T^2 + m_I m_T \\min(F_I, F_T)
    + |S|^2)` instead of :math:`O(m_I m_T |S|^2)`, memory :math:`O(|S|^2)` instead of
    :math:`O(m_I m_T |S|)`.

    Args:
        masks_image: ``(m_I, n_I)`` bool image coalitions.
        weights_image: ``(m_I,)`` their weights.
        masks_text: ``(m_T, n_T)`` bool text coalitions.
        weights_text: ``(m_T,)`` their weights.
        values: ``(m_I, m_T)`` game values of every combination.
        pairs: ``(P, 2)`` basis pairs over the joint players (image players first).

    Returns:
        ``G`` ``(1+n+P, 1+n+P)`` and ``r`` ``(1+n+P,)`` in float64, equal to
        :func:`normal_equations` on the ``m_I·m_T`` joint coalitions with weights
        :math:`w^I_a w^T_b`.

    Example:
        >>> mi, wi = all_coalitions(2), torch.full((4,), 0.25, dtype=torch.float64)
        >>> mt, wt = all_coalitions(1), torch.full((2,), 0.5, dtype=torch.float64)
        >>> y = torch.randn(4, 2, dtype=torch.float64)
        >>> joint = torch.cat([mi.repeat_interleave(2, 0), mt.repeat(4, 1)], 1)
        >>> pairs = interaction_pairs(2, 1)
        >>> g, r = kron_normal_equations(mi, wi, mt, wt, y, pairs)
        >>> g2, r2 = normal_equations(joint, torch.full((8,), 0.125, dtype=torch.float64), y.flatten(), pairs)
        >>> torch.allclose(g, g2) and torch.allclose(r, r2)
        True
    """
    _check_masks("masks_image", masks_image)
    _check_masks("masks_text", masks_text)
    (m_i, n_i), (m_t, n_t) = masks_image.shape, masks_text.shape
    check_tensor("values", values, ndim=2, floating=True)
    if tuple(values.shape) != (m_i, m_t):
        raise ValueError(
            f"Expected `values` of shape ({m_i}, {m_t}) (image × text coalitions), but got "
            f"{tuple(values.shape)}."
        )
    (w_i,) = _check_rows(m_i, weights_image=weights_image)
    (w_t,) = _check_rows(m_t, weights_text=weights_text)
    n = n_i + n_t
    pairs = _check_pairs(pairs, n)
    dev = values.device
    y = values.to(device=dev, dtype=torch.float64)
    pairs = pairs.to(dev)
    w_i, w_t = w_i.to(dev), w_t.to(dev)

    a, b = pairs[:, 0], pairs[:, 1]
    is_img = b < n_i
    is_txt = a >= n_i
    is_cross = ~is_img & ~is_txt
    img_pairs, txt_pairs = pairs[is_img], pairs[is_txt] - n_i
    phi_i = _design(masks_image.to(dev), img_pairs)  # (m_I, F_I)
    phi_t = _design(masks_text.to(dev), txt_pairs)  # (m_T, F_T)

    # factor index of every basis element: (image feature, text feature); 0 = the constant 1
    long = dict(dtype=torch.long, device=dev)
    ai = [torch.zeros(1, **long), torch.arange(1, 1 + n_i, **long), torch.zeros(n_t, **long)]
    bi = [torch.zeros(1, **long), torch.zeros(n_i, **long), torch.arange(1, 1 + n_t, **long)]
    pa = torch.zeros(pairs.shape[0], **long)
    pb = torch.zeros(pairs.shape[0], **long)
    pa[is_img] = 1 + n_i + torch.arange(int(is_img.sum()), **long)
    pb[is_txt] = 1 + n_t + torch.arange(int(is_txt.sum()), **long)
    pa[is_cross] = 1 + a[is_cross]
    pb[is_cross] = 1 + b[is_cross] - n_i
    ai = torch.cat([*ai, pa])
    bi = torch.cat([*bi, pb])

    gram_i = phi_i.T @ (phi_i * w_i[:, None])  # (F_I, F_I)
    gram_t = phi_t.T @ (phi_t * w_t[:, None])  # (F_T, F_T)
    wy = y * w_i[:, None] * w_t[None, :]
    # cheaper association first: (F_I × m_I)(m_I × m_T)(m_T × F_T)
    if phi_i.shape[1] <= phi_t.shape[1]:
        rhs_full = (phi_i.T @ wy) @ phi_t
    else:
        rhs_full = phi_i.T @ (wy @ phi_t)
    gram = gram_i[ai[:, None], ai[None, :]]
    gram.mul_(gram_t[bi[:, None], bi[None, :]])
    return gram, rhs_full[ai, bi]


def solve_interactions(
    gram: Tensor, rhs: Tensor, n: int, pairs: Tensor, *, ridge: float = 0.0
) -> BanzhafInteractions:
    """Solve :math:`(G + \\lambda D) e = r` by Cholesky and unpack the basis.

    :math:`D` is the identity without the constant (the constant is never shrunk). With
    ``ridge = 0`` this is the exact weighted least-squares solution; a small ``ridge`` (e.g.
    ``1e-6``; the Gram entries are probabilities in ``[0, 1]``) stabilises fits where some pair
    is rarely observed, at the price of a bias towards zero.

    Raises:
        ValueError: if the system is singular (too few coalitions for the basis).

    Example:
        >>> masks = all_coalitions(2)
        >>> v = torch.tensor([0.0, 1.0, 2.0, 4.0], dtype=torch.float64)  # e = 0, 1, 2, pair 1
        >>> pairs = interaction_pairs(2)
        >>> g, r = normal_equations(masks, banzhaf_kernel_weights(masks, 0.5), v, pairs)
        >>> e = solve_interactions(g, r, 2, pairs)
        >>> e.first_order.round(decimals=6).tolist(), round(e.second_order[0, 1].item(), 6)
        ([1.0, 2.0], 1.0)
    """
    check_tensor("gram", gram, ndim=2, floating=True)
    check_tensor("rhs", rhs, ndim=1, floating=True)
    pairs = _check_pairs(pairs, n)
    size = 1 + n + pairs.shape[0]
    if tuple(gram.shape) != (size, size) or rhs.shape[0] != size:
        raise ValueError(
            f"Expected `gram` ({size}, {size}) and `rhs` ({size},) for {n} players and "
            f"{pairs.shape[0]} pairs, but got {tuple(gram.shape)} and {tuple(rhs.shape)}."
        )
    check_positive("ridge", ridge, strict=False)
    gram = gram.to(torch.float64)
    if ridge > 0:
        diag = torch.full((size,), float(ridge), dtype=gram.dtype, device=gram.device)
        diag[0] = 0.0
        gram = gram + torch.diag(diag)
    # scale to unit diagonal so the singularity test does not depend on the value scale
    d = gram.diagonal().clamp_min(0).sqrt()
    if bool((d == 0).any()):
        raise ValueError(_singular_message(size))
    scaled = gram / d[:, None] / d[None, :]
    chol, info = torch.linalg.cholesky_ex(scaled)
    if int(info) != 0 or float(chol.diagonal().min()) < 1e-7:
        raise ValueError(_singular_message(size))
    sol = torch.cholesky_solve((rhs.to(torch.float64) / d)[:, None], chol)[:, 0] / d
    return _unpack(sol, n, pairs.to(sol.device))


def _singular_message(size: int) -> str:
    return (
        f"Expected enough distinct coalitions to identify the {size} basis terms, but the "
        "weighted least-squares system is singular (some player or pair is (almost) never "
        "present/absent in the sampled coalitions). Increase `budget`, restrict the basis "
        "(`clique_size`, `interactions='cross'`) or set a small `ridge` > 0."
    )


def _unpack(sol: Tensor, n: int, pairs: Tensor) -> BanzhafInteractions:
    second = torch.zeros(n, n, dtype=sol.dtype, device=sol.device)
    pv = sol[1 + n :]
    second[pairs[:, 0], pairs[:, 1]] = pv
    second[pairs[:, 1], pairs[:, 0]] = pv
    clique = torch.zeros(n, dtype=torch.bool, device=sol.device)
    clique[pairs.flatten()] = True
    return BanzhafInteractions(sol[0], sol[1 : 1 + n], second, clique)


# --------------------------------------------------------------------------- exact + theory
def exact_banzhaf_interactions(
    values: Tensor, p: float, *, pairs: Tensor | None = None
) -> BanzhafInteractions:
    """FIxLIP-p of a game given by all its ``2^n`` values (Definition 5, by enumeration).

    Args:
        values: ``(2^n,)`` game values; entry ``c`` is :math:`\\nu(M)` for the coalition whose
            players are the set bits of ``c`` (the row order of :func:`all_coalitions`).
        p: probability that a player is present, in (0, 1).
        pairs: basis pairs (default: all pairs).

    Over all coalitions weighted by :math:`\\mathbb{P}_p` the normal matrix is known in closed
    form, :math:`G_{\\alpha\\beta} = p^{|\\alpha \\cup \\beta|}`, and the right-hand side needs
    only :math:`\\sum_M w_M \\nu(M) x_i x_j`: :math:`O(2^n n^2)` work, no design matrix.

    Returns:
        The explanation minimising :math:`\\mathfrak{F}_p` exactly; its pairs are the weighted
        Banzhaf interaction indices and (Theorem 1) :func:`banzhaf_values_from_interactions`
        gives the weighted Banzhaf values.

    Example:
        >>> v = torch.tensor([0.0, 1.0, 2.0, 4.0])  # ν = x1 + 2·x2 + x1·x2
        >>> e = exact_banzhaf_interactions(v, 0.3)
        >>> round(e.constant.item(), 6) + 0.0, e.first_order.round(decimals=6).tolist()
        (0.0, [1.0, 2.0])
        >>> round(e.second_order[0, 1].item(), 6)
        1.0
    """
    check_tensor("values", values, ndim=1, floating=True)
    check_probability("p", p)
    m = values.shape[0]
    n = m.bit_length() - 1
    if m != 2**n:
        raise ValueError(f"Expected 2^n game values, but got {m}.")
    if n == 0:
        raise ValueError("Expected a game with at least one player, but got 1 value.")
    pairs = _check_pairs(interaction_pairs(n) if pairs is None else pairs, n).to(values.device)
    masks = all_coalitions(n, device=values.device)
    x = masks.to(torch.float64)
    wy = banzhaf_kernel_weights(masks, p) * values.to(torch.float64)
    # Over all coalitions with their exact weights, E[z_α z_β] = p^{|α ∪ β|}: the Gram matrix is
    # known in closed form, and the right-hand side needs only the n × n moments of w·ν.
    moments = x.T @ (x * wy[:, None])  # (n, n); diagonal = Σ_{M ∋ i} w ν
    rhs = torch.cat([wy.sum()[None], moments.diagonal(), moments[pairs[:, 0], pairs[:, 1]]])
    members = torch.zeros(1 + n + pairs.shape[0], n, dtype=torch.float64, device=values.device)
    members[torch.arange(1, 1 + n), torch.arange(n)] = 1.0
    rows = torch.arange(1 + n, 1 + n + pairs.shape[0], device=values.device)
    members[rows, pairs[:, 0]] = 1.0
    members[rows, pairs[:, 1]] = 1.0
    size = members.sum(-1)
    union = size[:, None] + size[None, :] - members @ members.T
    gram = torch.full_like(union, p).pow(union)
    return solve_interactions(gram, rhs, n, pairs)


def banzhaf_values_from_interactions(first_order: Tensor, second_order: Tensor, p: float) -> Tensor:
    """First-order conversion of Theorem 1: :math:`\\phi_i = e_i + p \\sum_{j \\neq i} e_{ij}`.

    These are the weighted Banzhaf values of :math:`\\hat\\nu_e` (and of :math:`\\nu` itself for
    the exact FIxLIP-p, whose first-order projection is the game's).

    Args:
        first_order: ``(..., n)``.
        second_order: ``(..., n, n)`` symmetric with zero diagonal.
        p: probability that a player is present.

    Example:
        >>> banzhaf_values_from_interactions(torch.tensor([1.0, 2.0]), torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 0.5)
        tensor([1.5000, 2.5000])
    """
    check_tensor("first_order", first_order, floating=True)
    check_tensor("second_order", second_order, floating=True)
    check_probability("p", p)
    n = first_order.shape[-1]
    if tuple(second_order.shape[-2:]) != (n, n):
        raise ValueError(
            f"Expected `second_order` of shape (..., {n}, {n}), but got {tuple(second_order.shape)}."
        )
    off = second_order - torch.diag_embed(second_order.diagonal(dim1=-2, dim2=-1))
    return first_order + p * off.sum(-1)


def approximate_game_values(
    masks: Tensor, constant: Tensor | float, first_order: Tensor, second_order: Tensor
) -> Tensor:
    """:math:`\\hat\\nu_e(M) = e_0 + \\sum_{i \\in M} e_i + \\sum_{i<j \\in M} e_{ij}` for many coalitions.

    Args:
        masks: ``(..., m, n)`` bool coalitions.
        constant: :math:`e_0` (scalar or broadcastable to ``(..., m)``).
        first_order: ``(n,)``.
        second_order: ``(n, n)`` symmetric, zero diagonal.

    Returns:
        ``(..., m)``.

    Example:
        >>> approximate_game_values(torch.tensor([[True, True]]), 0.5, torch.tensor([1.0, 2.0]),
        ...                         torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
        tensor([4.5000])
    """
    _check_masks("masks", masks, ndim=None)
    check_tensor("first_order", first_order, ndim=1, floating=True)
    n = first_order.shape[0]
    check_tensor("second_order", second_order, ndim=2, floating=True)
    if masks.shape[-1] != n or tuple(second_order.shape) != (n, n):
        raise ValueError(
            f"Expected `masks` (..., {n}) and `second_order` ({n}, {n}) for {n} players, but got "
            f"{tuple(masks.shape)} and {tuple(second_order.shape)}."
        )
    x = masks.to(first_order.dtype)
    quad = 0.5 * ((x @ second_order) * x).sum(-1)
    return constant + x @ first_order + quad


# --------------------------------------------------------------------------- subsets
def select_clique(first_order: Tensor, n_image: int, n_text: int, size: int) -> Tensor:
    """Two-step filtering (§3.3, Appendix B.1): the players whose pairs are fitted.

    Keeps the :math:`k_T = \\min(n_T, \\max(5, \\lceil k\\, n_T / n \\rceil))` text and
    :math:`k_I = k - k_T` image players with the largest :math:`|e_i|` (capped at the number of
    players of each modality). With ``n_text = 0``, the top-``k`` players overall.

    Args:
        first_order: ``(n,)`` first-order attributions (image players first).
        n_image: image players.
        n_text: text players.
        size: clique size :math:`k` (paper: 72).

    Returns:
        ``(n,)`` bool.

    Example:
        >>> select_clique(torch.tensor([0.1, -3.0, 0.2, 5.0, 0.0, 1.0]), 3, 3, 4).tolist()
        [False, True, False, True, True, True]
    """
    check_tensor("first_order", first_order, ndim=1, floating=True)
    n = n_image + n_text
    if first_order.shape[0] != n:
        raise ValueError(
            f"Expected `first_order` of shape ({n},), but got {tuple(first_order.shape)}."
        )
    check_int("size", size, 2)
    keep = torch.zeros(n, dtype=torch.bool, device=first_order.device)
    if size >= n:
        return keep.fill_(True)
    if n_text == 0:
        keep[first_order.abs().topk(size).indices] = True
        return keep
    k_text = min(n_text, max(5, math.ceil(size * n_text / n)))
    k_image = min(n_image, size - k_text)
    if k_image > 0:
        keep[first_order[:n_image].abs().topk(k_image).indices] = True
    keep[n_image + first_order[n_image:].abs().topk(k_text).indices] = True
    return keep


def greedy_subsets(
    first_order: Tensor,
    second_order: Tensor,
    constant: Tensor | float = 0.0,
    *,
    maximize: bool = True,
    starts: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Greedy search of :math:`M_{e,\\max,k}` / :math:`M_{e,\\min,k}` for every size ``k`` (Appendix B.1).

    From every start player (or the given ``starts``) in parallel, repeatedly add the player
    with the largest marginal gain :math:`e_j + \\sum_{i \\in M} e_{ij}` (smallest when
    ``maximize=False``); for each size keep the best subset over all starts. Exact for
    explanations without pairs (Proposition 1: top-``k`` players). Vectorised: one ``(s, n)``
    update per size, ties broken towards the lower index.

    Args:
        first_order: ``(n,)``.
        second_order: ``(n, n)`` symmetric, zero diagonal.
        constant: :math:`e_0` added to the values.
        maximize: search :math:`\\arg\\max` (insertion) or :math:`\\arg\\min` (deletion).
        starts: ``(s,)`` long start players (default: all).

    Returns:
        ``masks`` ``(n+1, n)`` bool (row ``k`` has ``k`` players; row 0 is empty) and their
        approximated values :math:`\\hat\\nu_e` ``(n+1,)``.

    Example:
        >>> e2 = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
        >>> masks, v = greedy_subsets(torch.tensor([1.0, 2.0, -1.0]), e2)
        >>> masks.int().tolist(), v.tolist()
        ([[0, 0, 0], [0, 1, 0], [1, 0, 1], [1, 1, 1]], [0.0, 2.0, 5.0, 7.0])
    """
    check_tensor("first_order", first_order, ndim=1, floating=True)
    n = first_order.shape[0]
    check_tensor("second_order", second_order, ndim=2, floating=True)
    if tuple(second_order.shape) != (n, n):
        raise ValueError(
            f"Expected `second_order` of shape ({n}, {n}), but got {tuple(second_order.shape)}."
        )
    dev = first_order.device
    if starts is None:
        starts = torch.arange(n, device=dev)
    else:
        check_tensor("starts", starts, ndim=1)
        if starts.dtype != torch.long or bool(((starts < 0) | (starts >= n)).any()):
            raise ValueError(
                f"Expected `starts` to be long player indices in [0, {n}), but got {starts}."
            )
        starts = starts.to(dev)
    sign = 1.0 if maximize else -1.0
    e1 = sign * first_order
    e2 = sign * (second_order - torch.diag_embed(second_order.diagonal()))
    s = starts.shape[0]
    rows = torch.arange(s, device=dev)
    chosen = torch.zeros(s, n, dtype=torch.bool, device=dev)
    chosen[rows, starts] = True
    gains = e1[None, :] + e2[starts]
    order = torch.empty(s, n, dtype=torch.long, device=dev)
    values = torch.empty(s, n, dtype=e1.dtype, device=dev)
    order[:, 0] = starts
    values[:, 0] = e1[starts]
    for k in range(1, n):
        g = gains.masked_fill(chosen, float("-inf"))
        best, j = g.max(1)
        values[:, k] = values[:, k - 1] + best
        order[:, k] = j
        chosen[rows, j] = True
        gains += e2[j]
    best_start = values.argmax(0)  # (n,) best start for size k+1
    rank = torch.empty(s, n, dtype=torch.long, device=dev)
    rank.scatter_(1, order, torch.arange(n, device=dev).expand(s, n))
    sizes = torch.arange(1, n + 1, device=dev)
    masks = rank[best_start] < sizes[:, None]
    masks = torch.cat([torch.zeros(1, n, dtype=torch.bool, device=dev), masks])
    best_vals = values.gather(0, best_start[None])[0]
    out = torch.cat([best_vals.new_zeros(1), sign * best_vals]) + constant
    return masks, out


# --------------------------------------------------------------------------- estimators
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


# --------------------------------------------------------------------------- checks
def _check_masks(name: str, masks: object, ndim: int | None = 2) -> None:
    check_tensor(name, masks, ndim=ndim, nonempty=False)
    if masks.dtype != torch.bool:  # type: ignore[union-attr]
        raise TypeError(f"Expected `{name}` to be a bool tensor, but got {masks.dtype}.")  # type: ignore[union-attr]


def _check_rows(m: int, **tensors: Tensor) -> list[Tensor]:
    out = []
    for name, t in tensors.items():
        check_tensor(name, t, ndim=1, floating=True, nonempty=False)
        if t.shape[0] != m:
            raise ValueError(f"Expected `{name}` of shape ({m},), but got {tuple(t.shape)}.")
        out.append(t.to(torch.float64))
    return out


def _check_pairs(pairs: Tensor, n: int) -> Tensor:
    check_tensor("pairs", pairs, ndim=2, nonempty=False)
    if pairs.shape[1] != 2 or pairs.dtype != torch.long:
        raise ValueError(
            f"Expected `pairs` to be (P, 2) long, but got {pairs.dtype} {tuple(pairs.shape)}."
        )
    if pairs.numel() and bool(
        ((pairs[:, 0] >= pairs[:, 1]) | (pairs[:, 0] < 0) | (pairs[:, 1] >= n)).any()
    ):
        raise ValueError(f"Expected pairs (i, j) with 0 <= i < j < {n}, but some are not.")
    return pairs
