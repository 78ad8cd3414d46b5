r"""Algebra of second-order (interaction) attributions for dual encoders (pure torch).

For a dual encoder :math:`s(a, b) = \tau\, g(a)^\top h(b)` (with :math:`g, h` L2-normalised
for cosine similarity) and inputs represented by tokens :math:`x_{s,d}` at some layer, the
integrated-Jacobian attribution of eq. 10 (second-order attributions paper, §3) summed over
the hidden dimensions is

.. math::
    A_{st} = \tau \sum_k U^a_{ks} U^b_{kt}, \qquad
    U_{ks} = \sum_d (x - r)_{s,d} \, \frac{1}{N} \sum_{n=1}^{N}
             \frac{\partial g_k(r + \alpha_n (x - r))}{\partial x_{s,d}},
    \quad \alpha_n = n / N,

because the sums over the hidden dimensions :math:`d` of each input factor out of the product
of the two Jacobians. :math:`U` (a per-token *gated Jacobian*, ``(T, K)`` per input) is all that
has to be computed per input; the dense ``(S·D) × (P·D)`` matrix of eq. 10 never appears.
ITSM uses the same contraction with :math:`U` = projected tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lico_lightning._validation import check_int, check_pairable

__all__ = ["integration_points", "token_interactions"]


def token_interactions(
    factors_a: Tensor, factors_b: Tensor, scale: float | Tensor = 1.0, all_pairs: bool = False
) -> Tensor:
    """Interaction matrix :math:`A_{st} = \\tau \\sum_k U^a_{sk} U^b_{tk}` from per-token factors.

    Args:
        factors_a: ``(Ba, Ta, K)`` per-token factors of the inputs ``a``.
        factors_b: ``(Bb, Tb, K)`` per-token factors of the inputs ``b``.
        scale: multiplier :math:`\\tau` (the logit scale).
        all_pairs: False: pair row ``i`` of ``a`` with row ``i`` of ``b`` → ``(B, Ta, Tb)``
            (needs ``Ba == Bb``); True: every ``a`` with every ``b`` → ``(Ba, Bb, Ta, Tb)``.

    Example:
        >>> u = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
        >>> token_interactions(u, u, scale=2.0)
        tensor([[[2., 0.],
                 [0., 8.]]])
    """
    check_pairable("factors_a", factors_a, "factors_b", factors_b, ndim=3, all_pairs=all_pairs)
    eq = "isk,jtk->ijst" if all_pairs else "bsk,btk->bst"
    return torch.einsum(eq, factors_a, factors_b) * scale


def integration_points(n_steps: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Right Riemann points :math:`\\alpha_n = n / N`, ``n = 1..N`` (eq. 9), ``(N,)``.

    Example:
        >>> integration_points(4)
        tensor([0.2500, 0.5000, 0.7500, 1.0000])
    """
    check_int("n_steps", n_steps, 1)
    return torch.arange(1, n_steps + 1, dtype=dtype) / n_steps
