"""The weighted least-squares fit: basis pairs, (Kronecker) normal equations, the solve."""

from __future__ import annotations

import torch
from torch import Tensor

from lico_lightning._validation import (
    check_choice,
    check_int,
    check_positive,
    check_tensor,
)
from lico_lightning.functional.banzhaf._common import (
    _KINDS,
    BanzhafInteractions,
    InteractionKind,
    _check_masks,
    _check_pairs,
    _check_rows,
)


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
        >>> from lico_lightning.functional import all_coalitions
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
    long = torch.long
    ai_parts = [
        torch.zeros(1, dtype=long, device=dev),
        torch.arange(1, 1 + n_i, dtype=long, device=dev),
        torch.zeros(n_t, dtype=long, device=dev),
    ]
    bi_parts = [
        torch.zeros(1, dtype=long, device=dev),
        torch.zeros(n_i, dtype=long, device=dev),
        torch.arange(1, 1 + n_t, dtype=long, device=dev),
    ]
    pa = torch.zeros(pairs.shape[0], dtype=long, device=dev)
    pb = torch.zeros(pairs.shape[0], dtype=long, device=dev)
    pa[is_img] = 1 + n_i + torch.arange(int(is_img.sum()), dtype=long, device=dev)
    pb[is_txt] = 1 + n_t + torch.arange(int(is_txt.sum()), dtype=long, device=dev)
    pa[is_cross] = 1 + a[is_cross]
    pb[is_cross] = 1 + b[is_cross] - n_i
    ai = torch.cat([*ai_parts, pa])
    bi = torch.cat([*bi_parts, pb])

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
        >>> from lico_lightning.functional import all_coalitions, banzhaf_kernel_weights
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
