r"""Evaluation metrics for interaction explanations (FIxLIP paper, §4): AID and PGR.

* :func:`area_between_insertion_deletion` — Definition 9, from the game values of the greedy
  subsets :math:`M_{e,\max,k}`, :math:`M_{e,\min,k}` (see
  :meth:`lico_lightning.explain.FIxLIP.insertion_deletion`).
* :func:`pointing_game_recognition` — Definition 10, from token × patch interactions and the
  patches that belong to each object token.
The p-faithfulness correlation (Definition 8) is
:func:`~lico_lightning.functional.spearman_correlation` of the game values and the
explanation's approximation on coalitions drawn from :math:`\mathbb{P}_p`.

Both work on a batch (leading dimensions) and return one value per explanation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lico_lightning._validation import check_bool, check_finite, check_tensor

__all__ = ["area_between_insertion_deletion", "pointing_game_recognition"]


def area_between_insertion_deletion(
    max_values: Tensor, min_values: Tensor, *, normalize: bool = True
) -> Tensor:
    """Area between the insertion and deletion curves (AID, Definition 9).

    .. math::
        \\mu_{\\mathrm{AID}}(e) = \\sum_{k=1}^{n} \\bigl(\\nu(M_{e,\\max,k}) - \\nu(M_{e,\\min,k})\\bigr)

    The insertion curve adds players in the order of :math:`M_{e,\\max,k}`; the deletion curve
    removes them so that :math:`M_{e,\\min,n-k}` is left after ``k`` deletions, i.e. both curves
    read the same values at ``k`` players present. With ``normalize`` the values are rescaled so
    that :math:`\\nu(\\emptyset) = 0` and :math:`\\nu(N) = 1` and the sum is divided by ``n``
    — the area between the normalised curves over the fraction of players present (the paper's
    plots; a random ordering scores 0 in expectation).

    Args:
        max_values: ``(..., n+1)``, entry ``k`` is :math:`\\nu(M_{e,\\max,k})`; entry 0 is
            :math:`\\nu(\\emptyset)` and entry ``n`` is :math:`\\nu(N)`.
        min_values: ``(..., n+1)``, entry ``k`` is :math:`\\nu(M_{e,\\min,k})`.
        normalize: rescale as described above.

    Returns:
        ``(...)`` AID.

    Raises:
        ValueError: with ``normalize`` if :math:`\\nu(N) = \\nu(\\emptyset)` for some curve.

    Example:
        >>> ins = torch.tensor([0.0, 3.0, 4.0])  # ν(∅), ν(best 1), ν(N)
        >>> dele = torch.tensor([0.0, 1.0, 4.0])
        >>> area_between_insertion_deletion(ins, dele, normalize=False)
        tensor(2.)
        >>> area_between_insertion_deletion(ins, dele)
        tensor(0.2500)
    """
    check_tensor("max_values", max_values, floating=True)
    check_tensor("min_values", min_values, floating=True)
    check_bool("normalize", normalize)
    if max_values.shape != min_values.shape:
        raise ValueError(
            "Expected `max_values` and `min_values` of the same shape, but got "
            f"{tuple(max_values.shape)} and {tuple(min_values.shape)}."
        )
    if max_values.shape[-1] < 2:
        raise ValueError(
            "Expected curves with n+1 >= 2 points (k = 0..n), but got "
            f"{max_values.shape[-1]} point(s)."
        )
    check_finite("max_values", max_values)
    check_finite("min_values", min_values)
    n = max_values.shape[-1] - 1
    diff = (max_values[..., 1:] - min_values[..., 1:]).sum(-1)
    if not normalize:
        return diff
    span = max_values[..., -1] - max_values[..., 0]
    if bool((span == 0).any()):
        raise ValueError(
            "Expected ν(N) != ν(∅) to normalise the curves, but got equal values for "
            f"{int((span == 0).sum())} curve(s); use normalize=False."
        )
    return diff / (n * span)


def pointing_game_recognition(
    interactions: Tensor, object_masks: Tensor, token_mask: Tensor | None = None
) -> Tensor:
    """Pointing game recognition (PGR, Definition 10).

    .. math::
        \\mu_{\\mathrm{PGR}} = \\frac{\\sum_k \\bigl(\\lVert e_{\\mathrm{in},k,>0}\\rVert_1
            + \\lVert e_{\\mathrm{out},k,<0}\\rVert_1\\bigr)}
            {\\sum_k \\bigl(\\lVert e_{\\mathrm{in},k}\\rVert_1 + \\lVert e_{\\mathrm{out},k}\\rVert_1\\bigr)}
        \\in [0, 1]

    where :math:`e_{\\mathrm{in},k}` are the interactions of object token ``k`` with its own
    patches and :math:`e_{\\mathrm{out},k}` with the other patches: positive interactions inside
    and negative ones outside the object count as correct.

    Args:
        interactions: ``(..., T, P)`` token × patch interactions.
        object_masks: ``(..., T, P)`` bool, True where patch ``j`` belongs to token ``k``'s object.
        token_mask: ``(..., T)`` bool, the object tokens ``k`` to score (default: all tokens).

    Returns:
        ``(...)`` PGR.

    Raises:
        ValueError: if an explanation has no nonzero interaction on its object tokens.

    Example:
        >>> e = torch.tensor([[2.0, -1.0], [-1.0, 1.0]])  # 2 tokens × 2 patches
        >>> obj = torch.tensor([[True, False], [False, True]])
        >>> pointing_game_recognition(e, obj)
        tensor(1.)
        >>> pointing_game_recognition(-e, obj)
        tensor(0.)
    """
    check_tensor("interactions", interactions, floating=True)
    check_tensor("object_masks", object_masks)
    if interactions.ndim < 2:
        raise ValueError(
            f"Expected `interactions` of shape (..., T, P), but got {tuple(interactions.shape)}."
        )
    if object_masks.dtype != torch.bool:
        raise TypeError(
            f"Expected `object_masks` to be a bool tensor, but got {object_masks.dtype}."
        )
    if object_masks.shape != interactions.shape:
        raise ValueError(
            "Expected `object_masks` of the same shape as `interactions`, but got "
            f"{tuple(object_masks.shape)} and {tuple(interactions.shape)}."
        )
    if token_mask is None:
        token_mask = torch.ones(
            interactions.shape[:-1], dtype=torch.bool, device=interactions.device
        )
    check_tensor("token_mask", token_mask)
    if token_mask.dtype != torch.bool:
        raise TypeError(f"Expected `token_mask` to be a bool tensor, but got {token_mask.dtype}.")
    if token_mask.shape != interactions.shape[:-1]:
        raise ValueError(
            f"Expected `token_mask` of shape {tuple(interactions.shape[:-1])}, but got "
            f"{tuple(token_mask.shape)}."
        )
    check_finite("interactions", interactions)
    e = interactions * token_mask[..., None]
    correct = torch.where(object_masks, e.clamp_min(0), (-e).clamp_min(0)).sum((-1, -2))
    total = e.abs().sum((-1, -2))
    if bool((total == 0).any()):
        raise ValueError(
            "Expected nonzero interactions on the object tokens, but got all zeros for "
            f"{int((total == 0).sum())} explanation(s)."
        )
    return correct / total
