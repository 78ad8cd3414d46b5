"""Interval estimates of shares: the Wilson score interval of a binomial proportion."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["wilson_interval"]


def wilson_interval(successes: Tensor, trials: Tensor, confidence: Tensor) -> tuple[Tensor, Tensor]:
    r"""Wilson score interval of a binomial share :math:`\hat p = k/n` (no continuity correction).

    EXPLAIN-R's concept score of an image is the share :math:`k/n` of its :math:`n` captions
    that mention the concept; this is the interval the training-time jitter draws in
    (:class:`~lico_lightning.concepts.ConceptPairDataset`). With
    :math:`z = \Phi^{-1}\big(\tfrac{1 + \text{confidence}}{2}\big)`:

    .. math::

        \frac{k + z^2/2}{n + z^2} \;\pm\; \frac{z}{n + z^2}\sqrt{\frac{k (n - k)}{n} + \frac{z^2}{4}}.

    It lies in [0, 1], contains :math:`k/n`, ends at 0 (1) for :math:`k = 0` (:math:`k = n`),
    shrinks to :math:`k/n` at confidence 0 and grows with the confidence (nested intervals).

    Args:
        successes: k, any shape (integer-valued floats or ints, :math:`0 \le k \le n`).
        trials: n, broadcastable with ``successes`` (:math:`n \ge 1`).
        confidence: levels in [0, 1), broadcastable.

    Returns:
        ``(low, high)``, float64 of the broadcast shape.

    Example:
        >>> low, high = wilson_interval(torch.tensor(1), torch.tensor(5), torch.tensor(0.95))
        >>> round(float(low), 4), round(float(high), 4)  # scipy: binomtest(1, 5).proportion_ci
        (0.0362, 0.6245)
    """
    k = torch.as_tensor(successes, dtype=torch.float64)
    n = torch.as_tensor(trials, dtype=torch.float64)
    conf = torch.as_tensor(confidence, dtype=torch.float64)
    if bool((n < 1).any()) or bool((k < 0).any()) or bool((k > n).any()):
        raise ValueError(
            "Expected 0 <= successes <= trials and trials >= 1, but got successes "
            f"{k.flatten()[:4].tolist()}... and trials {n.flatten()[:4].tolist()}..."
        )
    if bool((conf < 0).any()) or bool((conf >= 1).any()) or not bool(torch.isfinite(conf).all()):
        raise ValueError(
            f"Expected confidence levels in [0, 1), but got {conf.flatten()[:4].tolist()}..."
        )
    z = torch.special.ndtri((1 + conf) / 2)
    z2 = z * z
    center = (k + z2 / 2) / (n + z2)
    half = z / (n + z2) * torch.sqrt(k * (n - k) / n + z2 / 4)
    return (center - half).clamp(0.0, 1.0), (center + half).clamp(0.0, 1.0)
