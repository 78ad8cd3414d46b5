"""Coalitions: enumeration, the p-weighted kernel, Bernoulli(p) sampling, budget splits."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lico_lightning._validation import (
    check_int,
    check_probability,
    check_tensor,
)
from lico_lightning.functional.banzhaf._common import (
    MAX_EXACT_PLAYERS,
)


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
