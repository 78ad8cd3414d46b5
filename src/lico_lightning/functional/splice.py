r"""SpLiCE baseline (Bhalla et al., 2024): sparse non-negative concept decompositions of CLIP
image embeddings, the comparison of EXPLAIN-R's Tables 2–6.

Concept text embeddings are L2-normalised, centred on their mean and re-normalised (rows of
:math:`\hat C`, ``(C, K)``); an image embedding is normalised, centred on the image mean
:math:`\mu` (of the dataset) and re-normalised (:math:`\hat z`). The decomposition solves

.. math::

    w^\star = \arg\min_{w \ge 0}\ \|\hat C^\top w - \hat z\|_2^2 + 2\lambda \|w\|_1

with scikit-learn's coordinate-descent Lasso (``positive=True``; its ``alpha`` is
:math:`\lambda / K`). The reconstruction :math:`\hat C^\top w^\star + \mu` stands in for the
image embedding; larger :math:`\lambda` gives sparser :math:`w` (see
:func:`splice_penalty_for_sparsity` to compare at equal sparsity).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lico_lightning._validation import check_finite, check_int, check_real, check_tensor

__all__ = ["splice_decompose", "splice_penalty_for_sparsity", "splice_reconstruct"]


def _centred_unit(x: Tensor, mean: Tensor | None) -> Tensor:
    x = F.normalize(x.double(), dim=-1)
    if mean is None:
        return x
    return F.normalize(x - mean.double(), dim=-1)


def _check_inputs(image_embeds: Tensor, concept_embeds: Tensor, image_mean: Tensor | None) -> None:
    check_finite("image_embeds", check_tensor("image_embeds", image_embeds, ndim=2, floating=True))
    check_finite(
        "concept_embeds", check_tensor("concept_embeds", concept_embeds, ndim=2, floating=True)
    )
    if concept_embeds.shape[1] != image_embeds.shape[1]:
        raise ValueError(
            f"Expected `concept_embeds` of width {image_embeds.shape[1]} (as the images), but got "
            f"shape {tuple(concept_embeds.shape)}."
        )
    if image_mean is not None:
        check_tensor(
            "image_mean", image_mean, ndim=1, floating=True, shape=(image_embeds.shape[1],)
        )


def _concept_dictionary(concept_embeds: Tensor) -> Tensor:
    """The rows :math:`\\hat C`: normalised, centred on their mean, re-normalised (float64)."""
    unit = F.normalize(concept_embeds.double(), dim=-1)
    return _centred_unit(unit, unit.mean(0))


def splice_decompose(
    image_embeds: Tensor,
    concept_embeds: Tensor,
    image_mean: Tensor | None = None,
    l1_penalty: float = 0.25,
    max_iter: int = 5000,
    tol: float = 1e-4,
) -> Tensor:
    """Non-negative sparse weights ``(B, C)`` of each image over the concept dictionary.

    Args:
        image_embeds: ``(B, K)`` CLIP image embeddings.
        concept_embeds: ``(C, K)`` CLIP text embeddings of the concepts.
        image_mean: ``(K,)`` mean of the *normalised* image embeddings of the dataset
            (``None``: no centring).
        l1_penalty: :math:`\\lambda` (≥ 0).
        max_iter: coordinate-descent iterations.
        tol: scikit-learn's tolerance.

    Example:
        >>> concepts = torch.eye(3)
        >>> w = splice_decompose(torch.tensor([[1.0, 0.0, 0.0]]), concepts, l1_penalty=0.01)
        >>> int((w > 0).sum()), w.argmax().item()
        (1, 0)
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    _check_inputs(image_embeds, concept_embeds, image_mean)
    lam = check_real("l1_penalty", l1_penalty, low=0.0, strict=False)
    check_int("max_iter", max_iter, 1)
    dictionary = _concept_dictionary(concept_embeds).cpu().numpy()  # (C, K)
    targets = _centred_unit(image_embeds.cpu(), None if image_mean is None else image_mean.cpu())
    k = dictionary.shape[1]
    solver = Lasso(
        alpha=max(lam, 1e-12) / k, positive=True, fit_intercept=False, max_iter=max_iter, tol=tol
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        solver.fit(dictionary.T, targets.numpy().T)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        warnings.warn(
            f"splice_decompose: the Lasso did not converge in max_iter={max_iter} iterations "
            f"to tol={tol}; raise `max_iter` (or `tol`, `l1_penalty`).",
            UserWarning,
            stacklevel=2,
        )
    coef = np.atleast_2d(solver.coef_)
    return torch.from_numpy(coef).float().to(image_embeds.device)


def splice_reconstruct(
    weights: Tensor, concept_embeds: Tensor, image_mean: Tensor | None = None
) -> Tensor:
    """``(B, K)`` embeddings :math:`\\hat C^\\top w + \\mu` that stand in for the images.

    Example:
        >>> splice_reconstruct(torch.tensor([[0.5, 0.0]]), torch.eye(2))  # centred dictionary
        tensor([[ 0.3536, -0.3536]])
    """
    check_tensor("weights", weights, ndim=2, floating=True)
    check_tensor("concept_embeds", concept_embeds, ndim=2, floating=True)
    if weights.shape[1] != concept_embeds.shape[0]:
        raise ValueError(
            f"Expected `weights` with {concept_embeds.shape[0]} columns (one per concept), but got "
            f"shape {tuple(weights.shape)}."
        )
    out = weights.double() @ _concept_dictionary(concept_embeds).to(weights.device)
    if image_mean is not None:
        out = out + image_mean.double().to(weights.device)
    return out.float()


def splice_penalty_for_sparsity(
    image_embeds: Tensor,
    concept_embeds: Tensor,
    target_nonzeros: float,
    image_mean: Tensor | None = None,
    steps: int = 20,
) -> float:
    """The :math:`\\lambda` whose decompositions have about ``target_nonzeros`` non-zero weights
    per image on average (bisection in log space; for comparing at equal sparsity).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> img, con = torch.randn(4, 8, generator=g), torch.randn(20, 8, generator=g)
        >>> lam = splice_penalty_for_sparsity(img, con, target_nonzeros=3)
        >>> w = splice_decompose(img, con, l1_penalty=lam)
        >>> 2 <= (w > 0).sum(1).float().mean().item() <= 4
        True
    """
    check_real("target_nonzeros", target_nonzeros, low=0.0)
    check_int("steps", steps, 1)
    lo, hi = 1e-4, 1.0
    for _ in range(steps):
        mid = (lo * hi) ** 0.5
        with warnings.catch_warnings():  # only the support is read here, not the exact weights
            warnings.simplefilter("ignore", UserWarning)
            nnz = (splice_decompose(image_embeds, concept_embeds, image_mean, mid) > 0).sum(1)
        if nnz.float().mean().item() > target_nonzeros:
            lo = mid
        else:
            hi = mid
    return (lo * hi) ** 0.5
