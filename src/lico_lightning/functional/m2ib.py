"""Math of the multi-modal information bottleneck (M2IB, Wang et al., NeurIPS 2023, §3.3–3.4).

A per-element gate :math:`\\lambda = \\mathrm{sigmoid}(\\alpha)` mixes a hidden representation
:math:`R` (the output of a block of one tower) with Gaussian noise (paper eq. 5):

.. math::
    Z = \\lambda \\odot R + \\sigma (1 - \\lambda) \\odot \\varepsilon,
    \\qquad \\varepsilon \\sim \\mathcal{N}(0, I),

so :math:`p(z \\mid x) = \\mathcal{N}(\\lambda R, \\sigma^2 (1-\\lambda)^2)` (eq. 4). The noise
statistics are *not* estimated from data: the mean is 0 and :math:`\\sigma^2` is a
hyperparameter (the reference code's ``Estimator`` is filled with ``M = 0``, ``S = var``).
The compression term is the KL divergence to the variational prior
:math:`q(z) = \\mathcal{N}(0, I)` (eq. 8), per element. The fit term is the cosine similarity
between the bottlenecked tower's embedding and the other modality's embedding (eq. 15).

These functions are pure (no RNG: the caller passes the noise); the explainer
:class:`lico_lightning.explain.M2IB` runs the model and the optimisation.

Shapes: B pairs, Q noisy copies per pair, T tokens of the bottlenecked block, D its width,
K embedding dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lico_lightning._validation import check_positive, check_tensor

__all__ = [
    "bottleneck_capacity",
    "gaussian_bottleneck",
    "m2ib_objective",
]


def gaussian_bottleneck(features: Tensor, alpha: Tensor, noise: Tensor, sigma2: float) -> Tensor:
    """Noisy bottlenecked representation :math:`Z` (paper eq. 5).

    .. math::
        Z = \\lambda \\odot R + \\sigma (1 - \\lambda) \\odot \\varepsilon,
        \\qquad \\lambda = \\mathrm{sigmoid}(\\alpha)

    Args:
        features: :math:`R`, e.g. ``(B, 1, T, D)``.
        alpha: gate logits :math:`\\alpha`, broadcastable with ``features`` (``(B, 1, T, D)``).
        noise: standard normal :math:`\\varepsilon`, broadcastable (``(1, Q, T, D)``).
        sigma2: noise variance :math:`\\sigma^2 > 0`.

    Returns:
        :math:`Z` with the broadcast shape (``(B, Q, T, D)``).

    Example:
        >>> r = torch.ones(1, 3)
        >>> gaussian_bottleneck(r, torch.tensor([[20.0, 0.0, -20.0]]), torch.ones(1, 3), 4.0)
        tensor([[1.0000, 1.5000, 2.0000]])
    """
    check_positive("sigma2", sigma2)
    lam = torch.sigmoid(alpha)
    # 1 - sigmoid(a) == sigmoid(-a), exact also where sigmoid(a) rounds to 1
    return lam * features + (sigma2**0.5) * torch.sigmoid(-alpha) * noise


def bottleneck_capacity(features: Tensor, alpha: Tensor, sigma2: float) -> Tensor:
    """Per-element KL divergence of the bottleneck to the prior :math:`\\mathcal{N}(0, 1)` (eq. 8).

    .. math::
        \\mathrm{KL}\\big(\\mathcal{N}(\\lambda r, \\sigma^2(1-\\lambda)^2)
        \\,\\|\\, \\mathcal{N}(0, 1)\\big)
        = \\tfrac12 \\big(\\sigma^2 (1-\\lambda)^2 + \\lambda^2 r^2 - 1
        - \\log \\sigma^2 - 2 \\log (1-\\lambda)\\big)

    :math:`\\log(1-\\lambda)` is computed as ``logsigmoid(-alpha)``, finite for any
    :math:`\\alpha` (the reference's ``log((1 - sigmoid(alpha))**2)`` is ``-inf`` once
    :math:`\\alpha \\gtrsim 17` in float32), and with :math:`w = \\log(\\sigma^2(1-\\lambda)^2)`
    the first terms are evaluated as ``expm1(w) - w`` (no cancellation, never negative).

    Args:
        features: :math:`R`, any shape.
        alpha: gate logits, broadcastable with ``features``.
        sigma2: noise variance :math:`\\sigma^2 > 0`.

    Returns:
        The elementwise KL in nats, broadcast shape (``>= 0``).

    Example:
        >>> r = torch.tensor([0.0, 2.0])
        >>> closed = bottleneck_capacity(r, torch.tensor([-30.0, -30.0]), 1.0)  # pure noise
        >>> torch.allclose(closed, torch.zeros(2), atol=1e-8)
        True
        >>> bottleneck_capacity(r, torch.tensor([0.0, 0.0]), 1.0)  # λ = 1/2
        tensor([0.3181, 0.8181])
    """
    check_positive("sigma2", sigma2)
    lam = torch.sigmoid(alpha)
    # w = log(σ² (1-λ)²); σ²(1-λ)² - 1 - w = expm1(w) - w >= 0 without cancellation near λ = 0
    log_sigma2 = math.log(sigma2)
    w = log_sigma2 + 2.0 * F.logsigmoid(-alpha)
    return 0.5 * (torch.expm1(w) - w + (lam * features) ** 2)


def m2ib_objective(
    capacity: Tensor,
    embeddings: Tensor,
    target: Tensor,
    beta: float,
    valid: Tensor | None = None,
) -> Tensor:
    """Per-pair M2IB loss to minimise: ``beta`` · compression − fit (negated eq. 15).

    .. math::
        \\mathcal{L}_b = \\beta \\, \\frac{1}{|V_b| D} \\sum_{t \\in V_b} \\sum_{d}
        \\mathrm{KL}_{b t d}
        - \\frac{1}{Q} \\sum_{q=1}^{Q} \\cos\\big(g(Z_{bq}), e_b\\big)

    The compression term is the KL *averaged* over the bottlenecked elements (tokens
    :math:`V_b` × channels), as in the reference implementation whose default
    :math:`\\beta = 0.1` was tuned with this normalisation (the paper writes the sum; the
    average divides :math:`\\beta` by :math:`|V_b| D`). The fit term is the Monte-Carlo
    estimate over the Q noisy copies. Pairs are independent: the gradient of
    ``loss.sum()`` w.r.t. pair b's gate involves pair b's terms only.

    Args:
        capacity: elementwise KL ``(B, T, D)`` (:func:`bottleneck_capacity`).
        embeddings: embeddings of the bottlenecked tower ``(B, Q, K)`` (not normalised).
        target: the other modality's embedding ``(B, K)`` (not necessarily normalised; a
            constant).
        beta: weight of the compression term, ``>= 0``.
        valid: ``(B, T)`` bool, the bottlenecked tokens (default: all).

    Returns:
        ``(B,)`` loss per pair.

    Example:
        >>> cap = torch.full((1, 2, 3), 2.0)
        >>> emb = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # Q = 2 copies
        >>> m2ib_objective(cap, emb, torch.tensor([[1.0, 0.0]]), beta=0.1)
        tensor([-0.3000])
    """
    check_tensor("capacity", capacity, ndim=3, floating=True)
    check_tensor("embeddings", embeddings, ndim=3, floating=True)
    check_tensor("target", target, ndim=2, floating=True)
    b = capacity.shape[0]
    if embeddings.shape[0] != b or target.shape[0] != b:
        raise ValueError(
            f"Expected `capacity`, `embeddings` and `target` with the same batch size, but got "
            f"{tuple(capacity.shape)}, {tuple(embeddings.shape)} and {tuple(target.shape)}."
        )
    if embeddings.shape[-1] != target.shape[-1]:
        raise ValueError(
            f"Expected `embeddings` (B, Q, K) and `target` (B, K) of equal K, but got "
            f"{tuple(embeddings.shape)} and {tuple(target.shape)}."
        )
    if valid is None:
        compression = capacity.mean(dim=(1, 2))
    else:
        check_tensor("valid", valid, ndim=2)
        if valid.shape != capacity.shape[:2]:
            raise ValueError(
                f"Expected `valid` of shape {tuple(capacity.shape[:2])}, but got "
                f"{tuple(valid.shape)}."
            )
        w = valid.to(capacity.dtype)
        compression = (capacity * w[..., None]).sum(dim=(1, 2)) / (
            w.sum(-1).clamp_min(1.0) * capacity.shape[-1]
        )
    fit = F.cosine_similarity(embeddings, target[:, None, :].to(embeddings.dtype), dim=-1)
    return beta * compression - fit.mean(-1)
