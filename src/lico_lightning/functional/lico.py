r"""LICO's two alignment losses (Lei et al., NeurIPS 2023, §3.2–3.4): pure torch + POT.

* :func:`manifold_matching_loss` — eqs. (1)–(2): the batch adjacency of the image features must
  match the batch adjacency of the prompt features (KL divergence, row by row).
* :func:`sinkhorn_ot_loss` — eqs. (3)–(7): entropic optimal transport between the N feature
  maps of an image and the M tokens of its prompt, solved for the whole batch at once in the
  log domain with POT's batched solver; gradients by the envelope theorem (plan held fixed).

Both compute in (at least) float32 with autocast disabled, so bf16/fp16 inputs from a mixed
precision step give finite float32 losses and gradients.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Literal

import torch
from torch import Tensor

from lico_lightning._validation import (
    check_choice,
    check_int,
    check_positive,
    check_real,
    check_tensor,
)

__all__ = [
    "SinkhornConvergenceWarning",
    "manifold_matching_loss",
    "sinkhorn_ot_loss",
]

#: Choices of the manifold-matching distance and of the loss reductions (checked by the
#: functional losses and by their nn.Module wrappers in lico_lightning.losses).
MM_DISTANCES = ("euclidean", "cosine")
LOSS_REDUCTIONS = ("mean", "sum", "none")
# Rows with a smaller L2 norm are treated as zero vectors (undefined direction): cosine 0, no
# gradient. F.normalize would instead divide by its eps and return gradients of order 1/eps.
_NORM_EPS = 1e-12


class SinkhornConvergenceWarning(UserWarning):
    """The Sinkhorn solver stopped at ``max_iter`` with a marginal error above ``tol``."""


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------
def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float32 for half/bf16/float32 inputs, float64 if any input is float64."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _safe_normalize(x: Tensor) -> Tensor:
    """L2-normalise the last dim; (near-)zero rows map to 0 with a zero (not 1/eps) gradient."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    ok = norm > _NORM_EPS
    # per-row scale 1/|x| (0 for degenerate rows; the where keeps 1/0 out of the graph), then a
    # single multiply over the large tensor
    scale = ok.to(x.dtype) / torch.where(ok, norm, torch.ones_like(norm))
    return x * scale


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def _check_once(
    finite: dict[str, Tensor],
    positive: dict[str, Tensor] | None = None,
    nonnegative: dict[str, Tensor] | None = None,
) -> None:
    """All value checks in ONE host sync; only on failure find the culprit and explain.

    Finiteness is tested on the sum (one pass instead of isfinite's several): any NaN/Inf makes
    the sum non-finite. A finite tensor whose sum overflows is caught by the exact per-element
    check on the failure path, which then lets it through.
    """
    positive = positive or {}
    nonnegative = nonnegative or {}
    device = next(iter(finite.values())).device
    flags = [
        torch.isfinite(t.sum(dtype=torch.promote_types(t.dtype, torch.float32))).to(device)
        for t in finite.values()
    ]
    flags += [(t > 0).all().to(device) for t in positive.values()]
    flags += [(t >= 0).all().to(device) for t in nonnegative.values()]
    if bool(torch.stack(flags).all()):
        return
    for name, t in finite.items():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            raise ValueError(
                f"Expected `{name}` to be finite, but got {int(bad.sum())} non-finite value(s) "
                f"in a tensor of shape {tuple(t.shape)}."
            )
    for name, t in positive.items():
        if not bool((t > 0).all()):
            shown = t.item() if t.numel() == 1 else f"min {t.min().item():.4g}"
            raise ValueError(f"Expected `{name}` > 0, but got {shown}.")
    for name, t in nonnegative.items():
        if not bool((t >= 0).all()):
            raise ValueError(
                f"Expected `{name}` to be non-negative, but got min {t.min().item():.4g}."
            )
    # only a finite tensor whose sum overflowed gets here: all checks passed


def _check_pair_batch(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"Expected `{name_a}` and `{name_b}` to have the same batch size B, but got "
            f"{a.shape[0]} and {b.shape[0]}."
        )


# --------------------------------------------------------------------------------------------
# manifold matching (eqs. 1-2)
# --------------------------------------------------------------------------------------------
def _pairwise_distance(x: Tensor, distance: str, normalize: bool) -> Tensor:
    """(B, K) -> (B, B) distances; exact zeros on the diagonal with finite gradients."""
    if normalize or distance == "cosine":
        x = _safe_normalize(x)
    if distance == "cosine":
        return 1.0 - x @ x.T
    # Pairwise differences (not the Gram trick): no cancellation, D_ii == 0 exactly, and the
    # backward of cdist returns 0 (not inf/NaN) where the distance is 0.
    return torch.cdist(x, x, p=2.0, compute_mode="donot_use_mm_for_euclid_dist")


def _off_diagonal(x: Tensor) -> Tensor:
    """(B, B) -> (B, B-1): row i without entry (i, i), by a view (no boolean indexing/sync)."""
    b = x.shape[0]
    return x.reshape(-1)[1:].view(b - 1, b + 1)[:, :-1].reshape(b, b - 1)


def manifold_matching_loss(
    image_features: Tensor,
    text_features: Tensor,
    temperature: float | Tensor,
    distance: Literal["euclidean", "cosine"] = "euclidean",
    normalize: bool = False,
    exclude_diagonal: bool = True,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    r"""LICO manifold matching loss (paper eqs. 1–2).

    Each sample's features are flattened, the B×B distance matrices of the image features F
    and of the prompt features G are turned into row-wise softmax adjacencies, and the image
    adjacency is pulled towards the language adjacency with a KL divergence:

    .. math::
        A^F_{ij} = \frac{\exp(-D(F_i, F_j)/\tau)}{\sum_{s} \exp(-D(F_i, F_s)/\tau)}, \qquad
        A^G_{ij} = \frac{\exp(-D(G_i, G_j)/\tau)}{\sum_{s} \exp(-D(G_i, G_s)/\tau)},

    .. math::
        \mathcal{L}_{MM} = \frac{1}{B} \sum_{i=1}^{B}
            \mathrm{KL}\big[A^G_{i,:} \,\|\, A^F_{i,:}\big]
        = \frac{1}{B} \sum_{i} \sum_{j} A^G_{ij} \big(\log A^G_{ij} - \log A^F_{ij}\big),

    computed with ``log_softmax`` (stable for any τ). :math:`D` is the Euclidean distance
    :math:`\|x_i - x_j\|_2` (paper default, Table 7) or the cosine distance
    :math:`1 - \cos(x_i, x_j)`. Gradients reach both F and G (the paper trains the prompts and
    the mapping net with this loss too); detach ``text_features`` to use the language manifold
    as a fixed target.

    **Diagonal.** :math:`D(x_i, x_i) = 0`, so with the sum over all s (eq. 1 read literally)
    the self-term is the largest entry of every row in *both* adjacencies. It carries no
    information about the manifold (it is 0 for every sample in both modalities), yet it takes
    most of the mass of a row whenever the distances are large compared with τ: the loss then
    mostly compares how isolated sample i is in F and in G, and for a batch of distinct
    prompts both rows tend to the same one-hot as τ → 0, where loss and gradient vanish
    without anything being aligned. The default ``exclude_diagonal=True`` therefore takes the
    softmax over the B − 1 *other* samples (the paper's own reading: "the distance from the
    i-th sample to others within a mini-batch"). ``exclude_diagonal=False`` reproduces eq. 1
    literally (s runs over all B samples). With the diagonal excluded a batch of B = 2 gives
    each row a single neighbour, hence a constant loss of 0: use B ≥ 3.

    **Duplicated labels.** Samples of the same class share a prompt, so their G rows are
    identical (unless the prompts are randomised per sample) and their language distance is 0:
    A^G puts the largest, equal weights on the classmates present in the batch, and the loss
    pulls their image features together. This is the paper's behaviour and is kept as is.
    Distances use exact pairwise differences, so such zeros are exact and their gradient is 0
    (never NaN/Inf).

    Args:
        image_features: ``(B, ...)`` image features F, flattened per sample (e.g. ``(B, C, L)``
            feature maps with L = H·W). Any floating dtype; computed in float32 (float64 stays).
        text_features: ``(B, ...)`` prompt features G of each sample's prompt, flattened per
            sample (e.g. ``(B, M, L)`` mapped prompt tokens). The flattened sizes of F and G may
            differ: distances are taken within each modality.
        temperature: τ itself (not its log or inverse): a positive float, or a 0-dim tensor
            (differentiable, e.g. a learnable temperature). The same τ for both adjacencies.
        distance: ``"euclidean"`` or ``"cosine"``.
        normalize: L2-normalise each flattened sample before the distance (Euclidean distances
            then lie in [0, 2] whatever the feature size, which gives τ a fixed scale). No effect
            on ``"cosine"``.
        exclude_diagonal: leave the self-distance out of the row softmax (see above).
        reduction: ``"mean"`` (eq. 2), ``"sum"`` or ``"none"`` (per-sample KL, shape ``(B,)``).

    Returns:
        A 0-dim float32 (or float64) tensor, or ``(B,)`` for ``reduction="none"``.

    Raises:
        ValueError: batch sizes differ, B < 2, empty or non-finite inputs, τ ≤ 0, unknown
            ``distance`` / ``reduction``.
        TypeError: non-tensor or non-floating inputs.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> feats = torch.randn(4, 3, 5, generator=g)
        >>> manifold_matching_loss(feats, feats, temperature=0.5)  # identical manifolds
        tensor(0.)
        >>> loss = manifold_matching_loss(feats, torch.randn(4, 2, 5, generator=g), 0.5)
        >>> bool(loss > 0)
        True
    """
    check_tensor("image_features", image_features, floating=True)
    check_tensor("text_features", text_features, floating=True)
    if image_features.ndim < 2 or text_features.ndim < 2:
        raise ValueError(
            "Expected `image_features` and `text_features` of shape (B, ...) with at least 2 "
            f"dims, but got {tuple(image_features.shape)} and {tuple(text_features.shape)}."
        )
    _check_pair_batch("image_features", image_features, "text_features", text_features)
    batch = image_features.shape[0]
    if batch < 2:
        raise ValueError(
            "Expected a batch of at least B = 2 samples for manifold matching (each row of the "
            "adjacency is a distribution over the other samples of the batch; a single sample "
            f"has no neighbours), but got B = {batch}."
        )
    check_choice("distance", distance, MM_DISTANCES)
    check_choice("reduction", reduction, LOSS_REDUCTIONS)
    positive: dict[str, Tensor] = {}
    if isinstance(temperature, Tensor):
        if temperature.numel() != 1:
            raise ValueError(
                "Expected `temperature` to be a float or a 0-dim tensor, but got shape "
                f"{tuple(temperature.shape)}."
            )
        if not torch.is_floating_point(temperature):
            raise TypeError(
                f"Expected `temperature` to be a floating-point tensor, but got {temperature.dtype}."
            )
        positive["temperature"] = temperature.detach()
    elif isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        if not math.isfinite(temperature):
            raise ValueError(f"Expected `temperature` to be finite, but got {temperature!r}.")
        check_positive("temperature", temperature)
    else:
        raise TypeError(
            f"Expected `temperature` to be a float or a tensor, but got {type(temperature).__name__}."
        )
    finite = {"image_features": image_features.detach(), "text_features": text_features.detach()}
    if positive:
        finite["temperature"] = positive["temperature"]
    _check_once(finite, positive)

    dtype = _compute_dtype(image_features, text_features)
    with _no_autocast(image_features.device):
        f = image_features.flatten(1).to(dtype)
        g = text_features.flatten(1).to(dtype)
        tau = temperature.to(dtype).reshape(()) if isinstance(temperature, Tensor) else temperature
        d_f = _pairwise_distance(f, distance, normalize)
        d_g = _pairwise_distance(g, distance, normalize)
        if exclude_diagonal:
            d_f, d_g = _off_diagonal(d_f), _off_diagonal(d_g)
        log_a_f = torch.log_softmax(-d_f / tau, dim=1)
        log_a_g = torch.log_softmax(-d_g / tau, dim=1)
        kl = (log_a_g.exp() * (log_a_g - log_a_f)).sum(dim=1)
        return _reduce(kl, reduction)


# --------------------------------------------------------------------------------------------
# optimal transport (eqs. 3-7)
# --------------------------------------------------------------------------------------------
def _check_weights(
    name: str, w: Tensor | None, batch: int, n: int, tokens_name: str
) -> Tensor | None:
    if w is None:
        return None
    check_tensor(name, w, ndim=(1, 2), floating=True)
    if w.shape not in ((n,), (batch, n)):
        raise ValueError(
            f"Expected `{name}` of shape ({n},) or ({batch}, {n}) to match `{tokens_name}`, "
            f"but got {tuple(w.shape)}."
        )
    return w


def sinkhorn_ot_loss(
    image_tokens: Tensor,
    text_tokens: Tensor,
    epsilon: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-5,
    image_weights: Tensor | None = None,
    text_weights: Tensor | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    return_plan: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""LICO optimal-transport loss between feature maps and prompt tokens (paper eqs. 3–7).

    For each sample b, the N image feature maps :math:`f_n` (rows of ``image_tokens``, each a
    flattened H·W map) and the M prompt tokens :math:`g_m` (rows of ``text_tokens``) are two
    discrete distributions with weights u (uniform by default) and v. With the cosine cost on
    L2-normalised rows, the entropic OT plan is

    .. math::
        C_{b,nm} = 1 - \frac{f_{b,n}^\top g_{b,m}}{\|f_{b,n}\|\,\|g_{b,m}\|}, \qquad
        T^*_b = \mathop{\arg\min}_{T \in \Pi(u_b, v_b)}
            \langle T, C_b \rangle + \varepsilon \sum_{n,m} T_{nm} \log T_{nm},

    found for the whole batch at once by log-domain Sinkhorn iterations (eqs. 6–7, POT's
    ``ot.batch.solve_batch(method="log_sinkhorn")``), and the loss is the transport cost

    .. math::
        \mathcal{L}_{OT} = \frac{1}{B} \sum_{b=1}^{B} \langle T^*_b, C_b \rangle .

    **Returned value.** :math:`\langle T^*_b, C_b\rangle` without the entropy term, i.e. exactly
    what ``ot.sinkhorn2(u, v, C_b, epsilon, method="sinkhorn_log")`` returns per sample.

    **Gradient.** The solver runs without a graph (memory does not grow with ``max_iter``);
    :math:`\langle T^*_b, C_b\rangle` is then recomputed with the plan held constant, so the
    gradient w.r.t. the cost is :math:`\partial \mathcal{L} / \partial C_b = T^*_b / B`, and
    it reaches both token sets through :math:`C`. By the envelope (Danskin) theorem this is the
    *exact* gradient of the regularised optimum
    :math:`\mathrm{OT}_\varepsilon(C_b) = \min_T \langle T, C_b\rangle + \varepsilon\sum T\log T`
    (at convergence), not of the returned transport cost :math:`\langle T^*(C), C\rangle`, whose
    derivative would add :math:`\langle \partial T^*/\partial C, C\rangle`. The marginals are
    treated as constants.

    **Convergence.** POT's solver stops once the L2 error of the marginal that its last
    half-step does not enforce is below ``tol`` (it checks every 10 iterations, a host sync
    each time); after the solve this function checks the same error once more (one host sync)
    and warns with :class:`SinkhornConvergenceWarning` if it is still above ``tol``: raise
    ``max_iter`` or ``epsilon``. When N > M the transposed problem is solved (same unique
    plan; reductions then run over the long contiguous axis, ~3× faster on CPU), so the
    checked marginal is the one over the image feature maps when N ≤ M, over the prompt
    tokens otherwise. Small ε approaches unregularised
    OT but needs many more iterations (ε = 1e-3 needs thousands; the cost lies in [0, 2]).
    In float32 the error cannot go much below ~1e-6 (ε ≥ 1e-2) to ~1e-5 (ε = 1e-3), so do not
    set ``tol`` below that for float32 inputs (float64 inputs reach ~1e-15).

    Computation is float32 (float64 inputs stay float64) with autocast disabled. On a machine
    with a GPU, POT 0.9.7's torch backend initialises a CUDA context on the current device the
    first time it is used, even for CPU tensors.

    Args:
        image_tokens: ``(B, N, L)`` the N feature maps of each image, flattened to L = H·W.
        text_tokens: ``(B, M, L)`` the M mapped prompt tokens of each sample's prompt (the
            mapping net's output size must be L = H·W).
        epsilon: entropic regularisation ε > 0 (λ in the paper; 0.1 in the official code).
        max_iter: maximum number of Sinkhorn iterations (≥ 1).
        tol: tolerance on the L2 norm of the row-marginal error (≥ 0; 0 runs all iterations).
        image_weights: optional ``(N,)`` or ``(B, N)`` non-negative weights u (normalised to
            sum to 1 per sample). Uniform if ``None``.
        text_weights: optional ``(M,)`` or ``(B, M)`` non-negative weights v, likewise.
        reduction: ``"mean"`` (paper), ``"sum"`` or ``"none"`` (per sample, shape ``(B,)``).
        return_plan: also return the plans :math:`T^*`, ``(B, N, M)``, detached.

    Returns:
        The loss (0-dim, or ``(B,)`` for ``reduction="none"``), and the plans if
        ``return_plan``.

    Raises:
        ValueError: batch sizes or L differ, empty or non-finite inputs, ε ≤ 0, max_iter < 1,
            tol < 0, bad weights, unknown ``reduction``.
        TypeError: non-tensor or non-floating inputs.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> img, txt = torch.randn(2, 6, 4, generator=g), torch.randn(2, 3, 4, generator=g)
        >>> loss, plan = sinkhorn_ot_loss(img, txt, epsilon=0.1, return_plan=True)
        >>> plan.shape  # (B, N, M)
        torch.Size([2, 6, 3])
        >>> plan.sum(dim=1)  # each prompt token receives mass 1/M
        tensor([[0.3333, 0.3333, 0.3333],
                [0.3333, 0.3333, 0.3333]])
    """
    from ot.batch import solve_batch

    check_tensor("image_tokens", image_tokens, ndim=3, floating=True)
    check_tensor("text_tokens", text_tokens, ndim=3, floating=True)
    _check_pair_batch("image_tokens", image_tokens, "text_tokens", text_tokens)
    batch, n, width = image_tokens.shape
    m = text_tokens.shape[1]
    if text_tokens.shape[2] != width:
        raise ValueError(
            "Expected `image_tokens` (B, N, L) and `text_tokens` (B, M, L) to share the last "
            "dim L = H·W (the spatial size of the image feature map, which is the output size "
            f"of the mapping net), but got L = {width} and {text_tokens.shape[2]}."
        )
    check_real("epsilon", epsilon, low=0.0)
    check_int("max_iter", max_iter, 1)
    check_real("tol", tol, low=0.0, strict=False)
    check_choice("reduction", reduction, LOSS_REDUCTIONS)
    u = _check_weights("image_weights", image_weights, batch, n, "image_tokens")
    v = _check_weights("text_weights", text_weights, batch, m, "text_tokens")
    finite = {"image_tokens": image_tokens.detach(), "text_tokens": text_tokens.detach()}
    nonneg: dict[str, Tensor] = {}
    positive: dict[str, Tensor] = {}
    for name, w in (("image_weights", u), ("text_weights", v)):
        if w is not None:
            finite[name] = w.detach()
            nonneg[name] = w.detach()
            positive[f"{name}.sum(-1)"] = w.detach().sum(dim=-1)
    _check_once(finite, positive, nonneg)

    dtype = _compute_dtype(image_tokens, text_tokens)
    device = image_tokens.device
    with _no_autocast(device):
        f = _safe_normalize(image_tokens.to(dtype))
        g = _safe_normalize(text_tokens.to(dtype))
        cost = 1.0 - torch.bmm(f, g.transpose(1, 2))  # (B, N, M)
        a = _marginal(u, batch, n, dtype, device)
        b = _marginal(v, batch, m, dtype, device)
        # Solve the transposed problem when N > M: POT reduces over both axes, and reductions
        # over a long contiguous last axis are several times faster than over a short one.
        # The entropic OT solution is unique, so the plan is the same (transposed back).
        transpose = n > m
        with torch.no_grad():
            cost_s = cost.detach().transpose(1, 2).contiguous() if transpose else cost.detach()
            a_s, b_s = (b, a) if transpose else (a, b)
            plan_s = solve_batch(
                cost_s,
                reg=float(epsilon),
                a=a_s,
                b=b_s,
                max_iter=max_iter,
                tol=tol,
                method="log_sinkhorn",
                grad="detach",
            ).plan
            # POT's own stopping criterion: L2 error of the marginal that the last half-step
            # does not enforce (the other one is exact after it).
            err = torch.linalg.vector_norm(plan_s.sum(dim=2) - a_s, dim=1).max()
            plan = plan_s.transpose(1, 2) if transpose else plan_s
        err_value = float(err)  # the one convergence check (host sync) per call
        if not err_value <= tol:
            # Rounded up to a power of ten so that repeated warnings read the same (and the
            # default warning filter shows them once instead of at every training step).
            finite_err = math.isfinite(err_value)
            shown = f"<{10.0 ** math.ceil(math.log10(err_value)):.0e}" if finite_err else "nan"
            warnings.warn(
                f"Sinkhorn did not converge in max_iter={max_iter} iterations "
                f"(marginal error {shown} > tol={tol:g}, epsilon={epsilon:g}). "
                "Increase `max_iter`, or increase `epsilon` (faster convergence, smoother plan).",
                SinkhornConvergenceWarning,
                stacklevel=2,
            )
        per_sample = (plan * cost).sum(dim=(1, 2))
        loss = _reduce(per_sample, reduction)
    if return_plan:
        return loss, plan.contiguous()
    return loss


def _marginal(
    w: Tensor | None, batch: int, size: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    if w is None:
        return torch.full((batch, size), 1.0 / size, dtype=dtype, device=device)
    w = w.detach().to(device=device, dtype=dtype).expand(batch, size)
    return w / w.sum(dim=1, keepdim=True)
