r"""EXPLAIN-R's distillation loss with per-sample moving-average estimators (Algorithm 1).

* :class:`MovingAverageEstimator` — one sequence :math:`u_i` (or :math:`v_i`) over the whole
  dataset: a registered buffer of size N (so it is in checkpoints and moves with the module)
  plus a per-sample ``seen`` flag, updated at the batch's indices only and identical on every
  DDP rank.
* :class:`SurrogateDistillationLoss` — both directions (image→text, text→image), each with a
  teacher estimator :math:`u` and a student estimator :math:`v` sharing the sample index; the
  naive in-batch KL as an option and as the always-reported value. Under DDP the batch is the
  *global* batch (embeddings gathered from every rank), so a 2-process run takes the same
  steps as one process on the same global batches.

The formulas are in :mod:`lico_lightning.functional.surrogate`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from lico_lightning._validation import check_choice, check_int, check_real, check_tensor
from lico_lightning.functional.indexing import first_occurrences
from lico_lightning.functional.surrogate import (
    in_batch_similarity_kl,
    log_mean_exp,
    moving_average_kl_objective,
    update_log_moving_average,
)

__all__ = ["MovingAverageEstimator", "SurrogateDistillationLoss", "SurrogateLossOutput"]

_ESTIMATORS = ("moving_average", "in_batch")


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_gather_cat(x: Tensor) -> Tensor:
    """Concatenate ``x`` (first dims may differ) from every rank in rank order, no gradient."""
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(_world_size())]
    dist.all_gather(sizes, n)
    counts = torch.cat(sizes).tolist()  # one host sync, not one per rank
    padded = x.new_zeros((max(counts), *x.shape[1:]))
    padded[: x.shape[0]] = x.detach()
    out = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[:c] for o, c in zip(out, counts)])


def _check_indices(indices: object, batch: int, num_samples: int) -> Tensor:
    if not isinstance(indices, Tensor):
        raise TypeError(
            "Expected `indices` (the dataset positions of the batch's samples; build the "
            f"dataset with return_index=True) to be a torch.Tensor, but got {type(indices).__name__}."
        )
    if indices.ndim != 1 or indices.shape[0] != batch:
        raise ValueError(f"Expected `indices` of shape ({batch},), but got {tuple(indices.shape)}.")
    if indices.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"Expected `indices` to be an integer tensor, but got {indices.dtype}.")
    if batch:
        low, high = torch.stack(torch.aminmax(indices)).tolist()  # one host sync per call
        if low < 0 or high >= num_samples:
            raise ValueError(
                f"Expected `indices` in [0, {num_samples}), but got values in [{low}, {high}]."
            )
    return indices.long()


class MovingAverageEstimator(nn.Module):
    r"""Per-sample moving average of a batch normaliser, kept in the log domain.

    .. math::

        \log u_i \leftarrow \log\big((1-\gamma)\,u_i + \gamma\,\hat u_i\big)
        \quad (i \in B,\ \text{seen}),\qquad
        \log u_i \leftarrow \log \hat u_i \quad (i \in B,\ \text{first visit})

    State (buffers, in ``state_dict``): ``log_value`` ``(N,)`` and ``seen`` ``(N,)`` bool.
    Under DDP, :meth:`update` gathers indices and values from every rank and applies all of
    them on every rank (``sync=True``), so the state is identical everywhere. A sample that
    occurs several times in one (global) batch takes its first occurrence.

    Args:
        num_samples: N, the dataset length.
        gamma: step size in (0, 1] (paper: 0.9).

    Example:
        >>> est = MovingAverageEstimator(4, gamma=0.5)
        >>> est.update(torch.tensor([1, 2]), torch.tensor([0.0, 2.0])).tolist()
        [0.0, 2.0]
        >>> round(est.update(torch.tensor([1]), torch.tensor([1.0])).exp().item(), 4)  # ½e⁰ + ½e¹
        1.8591
        >>> est.seen.tolist()
        [False, True, True, False]
    """

    log_value: Tensor
    seen: Tensor

    def __init__(self, num_samples: int, gamma: float = 0.9) -> None:
        super().__init__()
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.gamma = check_real("gamma", gamma, low=0.0)
        if self.gamma > 1.0:
            raise ValueError(f"Expected `gamma` in (0, 1], but got {gamma!r}.")
        self.register_buffer("log_value", torch.zeros(num_samples))
        self.register_buffer("seen", torch.zeros(num_samples, dtype=torch.bool))

    def update(self, indices: Tensor, batch_log_values: Tensor, *, sync: bool = True) -> Tensor:
        """Apply one step at ``indices`` ``(B,)`` with values ``(B,)``; return the new values there.

        ``sync=False`` skips the DDP gather (for callers that already hold the global batch on
        every rank).
        """
        check_tensor("batch_log_values", batch_log_values, ndim=1, floating=True)
        indices = _check_indices(indices, batch_log_values.shape[0], self.num_samples)
        local = indices.to(self.log_value.device)
        values = batch_log_values.detach().to(self.log_value)
        if sync and _world_size() > 1:
            indices, values = _all_gather_cat(local), _all_gather_cat(values)
        else:
            indices = local
        unique, first = first_occurrences(indices)
        new = update_log_moving_average(
            self.log_value[unique], self.seen[unique], values[first], self.gamma
        )
        self.log_value[unique] = new
        self.seen[unique] = True
        return self.log_value[local]


class SurrogateLossOutput(NamedTuple):
    """What :class:`SurrogateDistillationLoss` returns.

    Attributes:
        loss: the scalar to backpropagate (its value is only meaningful for
            ``estimator="in_batch"``).
        kl: the naive symmetric in-batch KL of this (global) batch, detached (always reported).
        top1_agreement: share of images whose top-1 caption under the surrogate equals CLIP's.
    """

    loss: Tensor
    kl: Tensor
    top1_agreement: Tensor


class SurrogateDistillationLoss(nn.Module):
    r"""EXPLAIN-R's loss: the surrogate reproduces CLIP's in-batch similarity distributions.

    .. math::

        \mathcal{L} = \tfrac12\,\tfrac1n\sum_i \mathrm{KL}(P^e_i\|P^f_i)
                    + \tfrac12\,\tfrac1n\sum_j \mathrm{KL}(Q^e_j\|Q^f_j)

    minimised with Algorithm 1's moving-average gradient estimator
    (``estimator="moving_average"``, four :class:`MovingAverageEstimator` s: teacher ``u`` and
    student ``v`` per direction) or with the biased mini-batch KL (``"in_batch"``, ablation).
    Logits are :math:`A = \hat e_I \hat e_T^\top/\tau`, :math:`S = \hat f \hat e_T^\top/\tau` on
    L2-normalised embeddings. The estimators are only updated in training mode; in eval mode
    the loss is the in-batch KL.

    Under DDP (an initialised process group) the three embeddings and the indices are gathered
    from every rank, every rank computes the loss of the global batch, and the returned loss
    carries ``world_size`` times the local gradient so that DDP's gradient *average* equals the
    global-batch gradient.

    Args:
        num_samples: N, the dataset length (size of each estimator).
        temperature: :math:`\tau` (paper: 0.1) for teacher and student.
        gamma_teacher: :math:`\gamma_1` of :math:`u` (paper: 0.9).
        gamma_student: :math:`\gamma_2` of :math:`v` (paper: 0.9).
        estimator: ``"moving_average"`` (Algorithm 1) or ``"in_batch"``.
        symmetric: both directions (paper) or image→text only.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> img, txt = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
        >>> student = torch.randn(4, 8, generator=g, requires_grad=True)
        >>> loss_fn = SurrogateDistillationLoss(num_samples=10)
        >>> out = loss_fn(img, txt, student, torch.tensor([0, 3, 5, 9]))
        >>> out.loss.backward()
        >>> student.grad.shape, loss_fn.i2t_u.seen.sum().item()
        (torch.Size([4, 8]), 4)
    """

    def __init__(
        self,
        num_samples: int,
        temperature: float = 0.1,
        gamma_teacher: float = 0.9,
        gamma_student: float = 0.9,
        estimator: Literal["moving_average", "in_batch"] = "moving_average",
        symmetric: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = check_real("temperature", temperature, low=0.0)
        self.estimator = check_choice("estimator", estimator, _ESTIMATORS)
        self.symmetric = bool(symmetric)
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.i2t_u = MovingAverageEstimator(num_samples, gamma_teacher)
        self.i2t_v = MovingAverageEstimator(num_samples, gamma_student)
        self.t2i_u = MovingAverageEstimator(num_samples, gamma_teacher)
        self.t2i_v = MovingAverageEstimator(num_samples, gamma_student)

    def logits(
        self, image_embeds: Tensor, text_embeds: Tensor, surrogate_embeds: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Teacher and student logits ``(B, B)`` (rows = images, columns = captions)."""
        txt = F.normalize(text_embeds.detach().float(), dim=-1)
        teacher = F.normalize(image_embeds.detach().float(), dim=-1) @ txt.T / self.temperature
        student = F.normalize(surrogate_embeds.float(), dim=-1) @ txt.T / self.temperature
        return teacher, student

    def forward(
        self,
        image_embeds: Tensor,
        text_embeds: Tensor,
        surrogate_embeds: Tensor,
        indices: Tensor,
    ) -> SurrogateLossOutput:
        """Loss of one batch.

        Args:
            image_embeds: ``(B, K)`` CLIP image embeddings (frozen; no gradient taken).
            text_embeds: ``(B, K)`` CLIP embeddings of one caption per image (frozen).
            surrogate_embeds: ``(B, K)`` surrogate embeddings :math:`f(c_i)`.
            indices: ``(B,)`` dataset positions of the samples, in ``[0, N)``.
        """
        check_tensor("image_embeds", image_embeds, ndim=2, floating=True)
        for name, x in (("text_embeds", text_embeds), ("surrogate_embeds", surrogate_embeds)):
            check_tensor(name, x, ndim=2, floating=True)
            if x.shape != image_embeds.shape:
                raise ValueError(
                    f"Expected `{name}` of shape {tuple(image_embeds.shape)} (as `image_embeds`), "
                    f"but got {tuple(x.shape)}."
                )
        indices = _check_indices(indices, image_embeds.shape[0], self.num_samples)
        world = _world_size()
        if world > 1:
            rank = dist.get_rank()
            sizes = _all_gather_cat(indices.new_tensor([indices.shape[0]])).tolist()
            start = sum(sizes[:rank])
            gathered = _all_gather_cat(surrogate_embeds)
            surrogate_embeds = torch.cat(
                [gathered[:start], surrogate_embeds, gathered[start + sizes[rank] :]]
            )
            image_embeds, text_embeds = _all_gather_cat(image_embeds), _all_gather_cat(text_embeds)
            indices = _all_gather_cat(indices.to(image_embeds.device))
        teacher, student = self.logits(image_embeds, text_embeds, surrogate_embeds)
        moving = self.estimator != "in_batch" and self.training
        # with the moving-average objective the in-batch KL is only reported: no graph for it
        kl = in_batch_similarity_kl(
            teacher, student.detach() if moving else student, symmetric=self.symmetric
        )
        agreement = (student.detach().argmax(1) == teacher.argmax(1)).float().mean()
        if moving:
            loss = self._moving_average_objective(teacher, student, indices)
        else:
            loss = kl
        if world > 1:  # value of the global loss, world × the local slice's gradient
            loss = loss + (world - 1) * (loss - loss.detach())
        return SurrogateLossOutput(loss, kl.detach(), agreement)

    def _moving_average_objective(
        self, teacher: Tensor, student: Tensor, indices: Tensor
    ) -> Tensor:
        fixed = student.detach()
        log_u = self.i2t_u.update(indices, log_mean_exp(teacher), sync=False)
        log_v = self.i2t_v.update(indices, log_mean_exp(fixed), sync=False)
        i2t = moving_average_kl_objective(teacher, student, log_u, log_v)
        if not self.symmetric:
            return i2t
        log_u = self.t2i_u.update(indices, log_mean_exp(teacher.T), sync=False)
        log_v = self.t2i_v.update(indices, log_mean_exp(fixed.T), sync=False)
        return 0.5 * (i2t + moving_average_kl_objective(teacher.T, student.T, log_u, log_v))
