r"""EXPLAIN-R's distillation objective (appendix B.2, Algorithm 1, eqs. 10–11): pure torch.

A surrogate embedding :math:`f(c_i)` of image *i*'s concept vector must reproduce CLIP's own
in-batch similarity distributions. With teacher logits :math:`A_{ij} = e_I(x_i)^\top e_T(t_j)/\tau`
and student logits :math:`S_{ij} = f(c_i)^\top e_T(t_j)/\tau` (L2-normalised embeddings), the
image→text objective is

.. math::

    \frac{1}{n}\sum_i \mathrm{KL}(P^e_i \,\|\, P^f_i), \qquad
    P^e_i = \mathrm{softmax}_j A_{ij},\; P^f_i = \mathrm{softmax}_j S_{ij},

which (eq. 11) equals, up to a constant, :math:`\frac{1}{n^2}\sum_{ij} g_e(i,j)^{-1}
\log g_f(i,j)` with :math:`g_f(i,j) = \frac{1}{n}\sum_k \exp(S_{ik} - S_{ij})`. The text→image
side is the same with the matrices transposed.

Its mini-batch gradient is biased (the reciprocal of a batch mean). Algorithm 1 replaces the
two normalisers :math:`\frac{1}{n}\sum_k \exp(A_{ik})` and :math:`\frac{1}{n}\sum_k \exp(S_{ik})`
by per-sample moving averages :math:`u_i`, :math:`v_i`:

.. math::

    \nabla \approx \frac{1}{|B|^2}\sum_{i, j \in B}
    \frac{\exp(A_{ij})}{u_i}\,\frac{\exp(S_{ij})}{v_i}\,\nabla g_B(f; c_i, t_j).

Everything here works in the log domain (:math:`\log u`, :math:`\log v`), so any temperature
is safe from overflow. The state (the moving averages themselves, first-visit flags, DDP) lives
in :class:`lico_lightning.losses.MovingAverageEstimator`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lico_lightning._validation import check_tensor

__all__ = [
    "concept_contributions",
    "in_batch_similarity_kl",
    "log_mean_exp",
    "moving_average_kl_objective",
    "update_log_moving_average",
]


def _check_square_pair(teacher_logits: Tensor, student_logits: Tensor) -> None:
    check_tensor("teacher_logits", teacher_logits, ndim=2, floating=True)
    check_tensor("student_logits", student_logits, ndim=2, floating=True)
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            "Expected `teacher_logits` and `student_logits` of the same shape, but got "
            f"{tuple(teacher_logits.shape)} and {tuple(student_logits.shape)}."
        )


def log_mean_exp(logits: Tensor) -> Tensor:
    r"""Row-wise :math:`\log \frac{1}{B'}\sum_k \exp(l_{ik})` of ``(B, B')`` logits → ``(B,)``.

    The batch value of :math:`\log u_i` (teacher logits) or :math:`\log v_i` (student logits).

    Example:
        >>> log_mean_exp(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        tensor([0., 1.])
    """
    check_tensor("logits", logits, ndim=2, floating=True)
    return torch.logsumexp(logits, dim=1) - math.log(logits.shape[1])


def update_log_moving_average(
    log_state: Tensor, seen: Tensor, batch_log_values: Tensor, gamma: float
) -> Tensor:
    r"""One moving-average step in the log domain (eqs. 5–6 of EXPLAIN-R).

    .. math::

        u \leftarrow (1-\gamma)\,u + \gamma\,\hat u \quad\text{(seen samples)},\qquad
        u \leftarrow \hat u \quad\text{(first visit)}

    Args:
        log_state: ``(B,)`` current :math:`\log u` of the batch's samples.
        seen: ``(B,)`` bool, False where the sample has never been updated (its state is
            ignored and replaced by the batch value — not :math:`\gamma\hat u`, which would bias
            the estimate towards 0).
        batch_log_values: ``(B,)`` :math:`\log \hat u` of this batch (:func:`log_mean_exp`).
        gamma: step size in (0, 1]; 1 keeps only the batch value.

    Returns:
        ``(B,)`` the new :math:`\log u`.

    Example:
        >>> new = update_log_moving_average(torch.tensor([0.0, 5.0]), torch.tensor([True, False]),
        ...                                 torch.tensor([math.log(3.0), 1.0]), 0.5)
        >>> new.exp()  # 0.5·1 + 0.5·3, first visit takes e^1
        tensor([2.0000, 2.7183])
    """
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"Expected `gamma` in (0, 1], but got {gamma!r}.")
    if gamma == 1.0:
        return batch_log_values.clone()
    mixed = torch.logaddexp(log_state + math.log1p(-gamma), batch_log_values + math.log(gamma))
    return torch.where(seen, mixed, batch_log_values)


def moving_average_kl_objective(
    teacher_logits: Tensor, student_logits: Tensor, log_u: Tensor, log_v: Tensor
) -> Tensor:
    r"""A scalar whose gradient w.r.t. ``student_logits`` is Algorithm 1's estimator (one side).

    .. math::

        \mathcal{J} = \frac{1}{|B|^2}\sum_{i,j}
        \underbrace{\frac{\exp(A_{ij})}{u_i}\frac{\exp(S_{ij})}{v_i}}_{\text{no gradient}}
        \, g_B(i, j), \qquad
        g_B(i,j) = \frac{1}{|B|}\sum_k \exp(S_{ik} - S_{ij})

    Its *value* is not the KL divergence (log :func:`in_batch_similarity_kl` for that); only
    its gradient is meaningful. With :math:`u, v` equal to the exact full-data normalisers and
    the whole dataset as the batch, the gradient equals that of
    :math:`\frac{1}{n}\sum_i \mathrm{KL}(P^e_i\|P^f_i)` (eq. 11).

    Args:
        teacher_logits: ``(B, B)`` CLIP logits :math:`A_{ij}` (row = query).
        student_logits: ``(B, B)`` surrogate logits :math:`S_{ij}`.
        log_u: ``(B,)`` :math:`\log u_i` after this step's update.
        log_v: ``(B,)`` :math:`\log v_i` after this step's update.

    Example:
        >>> A = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> S = torch.zeros(2, 2, requires_grad=True)
        >>> moving_average_kl_objective(A, S, log_mean_exp(A), log_mean_exp(S.detach())).backward()
        >>> S.grad  # = (softmax(S) - softmax(A)) / B: descent raises the diagonal
        tensor([[-0.1904,  0.1904],
                [ 0.1904, -0.1904]])
    """
    _check_square_pair(teacher_logits, student_logits)
    b = teacher_logits.shape[0]
    for name, x in (("log_u", log_u), ("log_v", log_v)):
        check_tensor(name, x, ndim=1, floating=True, shape=(b,))
    s_fixed = student_logits.detach()
    weights = torch.exp(
        teacher_logits.detach() - log_u[:, None] + s_fixed - log_v.detach()[:, None]
    )
    # log g_B(i, j) = logmeanexp_k S_ik - S_ij; exponentiated after subtracting, so bounded.
    log_g = log_mean_exp(student_logits)[:, None] - student_logits
    return (weights * torch.exp(log_g)).sum() / (b * b)


def in_batch_similarity_kl(
    teacher_logits: Tensor, student_logits: Tensor, *, symmetric: bool = True
) -> Tensor:
    r"""The naive in-batch objective: mean KL between CLIP's and the surrogate's softmaxes.

    .. math::

        \tfrac12\,\tfrac{1}{B}\sum_i \mathrm{KL}(P^e_i\|P^f_i)
        + \tfrac12\,\tfrac{1}{B}\sum_j \mathrm{KL}(Q^e_j\|Q^f_j)

    with :math:`P` the row softmax (image→text) and :math:`Q` the column softmax (text→image);
    ``symmetric=False`` gives the image→text term alone (without the ½).

    Args:
        teacher_logits: ``(B, B)`` CLIP logits, rows = images, columns = captions.
        student_logits: ``(B, B)`` surrogate logits.
        symmetric: average both directions.

    Example:
        >>> A = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> in_batch_similarity_kl(A, A).item(), round(in_batch_similarity_kl(A, 0 * A).item(), 4)
        (0.0, 0.3278)
    """
    _check_square_pair(teacher_logits, student_logits)

    def kl(t: Tensor, s: Tensor) -> Tensor:
        log_p = torch.log_softmax(t, dim=1)
        return (log_p.exp() * (log_p - torch.log_softmax(s, dim=1))).sum(1).mean()

    i2t = kl(teacher_logits, student_logits)
    if not symmetric:
        return i2t
    return 0.5 * (i2t + kl(teacher_logits.T, student_logits.T))


def concept_contributions(
    concepts: Tensor, weight: Tensor, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    r"""Signed per-concept weights that decompose a linear surrogate's embedding.

    For :math:`f(c) = W c + b`, each concept's term :math:`c_k W_{:,k}` is projected on the
    unit embedding :math:`\hat f = f/\|f\|` and divided by :math:`\|f\|`:

    .. math::

        w_k = \frac{c_k\, W_{:,k}^\top \hat f}{\|f\|}, \qquad
        w_b = \frac{b^\top \hat f}{\|f\|}, \qquad \sum_k w_k + w_b = 1.

    So the weights are shares of the embedding's length (negative: the concept points away
    from the embedding), and the surrogate's cosine similarity with any direction lying along
    :math:`\hat f` is the sum of the terms.

    Args:
        concepts: ``(B, C)`` concept scores.
        weight: ``(K, C)`` surrogate weight :math:`W`.
        bias: ``(K,)`` surrogate bias or ``None``.

    Returns:
        ``(B, C)`` concept weights and ``(B,)`` the bias share :math:`w_b`.

    Example:
        >>> W = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> w, wb = concept_contributions(torch.tensor([[3.0, 4.0]]), W)
        >>> w, wb  # f = (3, 4): shares 9/25 and 16/25
        (tensor([[0.3600, 0.6400]]), tensor([0.]))
    """
    check_tensor("concepts", concepts, ndim=2, floating=True)
    check_tensor("weight", weight, ndim=2, floating=True)
    if weight.shape[1] != concepts.shape[1]:
        raise ValueError(
            f"Expected `concepts` with {weight.shape[1]} columns (the surrogate's concepts), "
            f"but got shape {tuple(concepts.shape)}."
        )
    f = concepts @ weight.T
    if bias is not None:
        f = f + bias
    norm_sq = (f * f).sum(-1, keepdim=True)
    per_concept = concepts * (f @ weight) / norm_sq
    bias_share = (f @ bias / norm_sq[:, 0]) if bias is not None else f.new_zeros(f.shape[0])
    return per_concept, bias_share
