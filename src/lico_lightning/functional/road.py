r"""Debiased removal metrics: ROAD's noisy linear imputation (Rong et al., ICML 2022), its
most- and least-relevant-first curves, the confidence-normalised curve (PAIR's performance
information curves, Kapishnikov et al. 2021) and the symmetric relevance gain (Blücher et al.,
TMLR 2024).

* :func:`noisy_linear_imputation` fills removed pixels from their 8 neighbours by solving one
  sparse linear system per image (batched in torch: multigrid-preconditioned conjugate
  gradients, every channel and every removal mask of a batch at once) and adds Gaussian noise.
* :func:`road_removal_masks` says which pixels are removed at each fraction, most relevant first
  (MoRF) or least relevant first (LeRF).
* :func:`road_curves` runs the classifier on the imputed images; :func:`road_auc` integrates
  the curves (with :func:`~lico_lightning.functional.curve_auc`).
* :func:`confidence_normalized_curve` and :func:`symmetric_relevance_gain` are pure functions on
  curves of any removal protocol.

Model-running functions take any callable ``model(images) -> logits`` and run it under
``torch.no_grad()``; they do not change the model's train/eval mode (the metric classes of
:mod:`lico_lightning.metrics` do, and restore it).

Solver accuracy: conjugate gradients stop at a relative residual ``tol`` (default 1e-5). In
float32 at 16-224 px the imputed values then lie within 1e-3 of a float64 direct sparse solve
(2e-5 to 2e-4 typically; the worst case is 99 % removed in one large hole), 10x below ROAD's
noise; with float64 inputs and
``tol=1e-12`` they agree with it to 1e-11 (``tests/functional/test_road.py``).

Conventions against Quantus 0.6's ``quantus.ROAD`` (the test-only reference; with these aligned
the two give identical accuracy curves and the same imputed images):

* **score**: Quantus records accuracy (arg-max == label, averaged over the batch); ours is the
  target's softmax probability per image by default, Quantus's with ``score="correct"``.
* **orders**: Quantus has MoRF only; our LeRF is Quantus's MoRF on the negated map.
* **removed count**: both remove :math:`\lfloor HW \cdot p / 100 \rfloor` pixels for a
  percentage ``p``; we take fractions ``p / 100`` (a 1e-6 guard keeps 0.29 · 100 at 29 pixels)
  and keep at least one pixel.
* **ties**: we rank with a stable sort (lower row-major index first); Quantus uses NumPy's
  unstable ``argsort(-a)``, so tied maps may remove different pixels.
* **map preprocessing**: Quantus divides maps by their maximum absolute value (``normalise=
  True``) and optionally takes ``abs``; we use the map as given (rescaling never changes the
  order; pass ``saliency.abs()`` for ``abs=True``).
* **noise**: same model, :math:`\mathcal N(0, 0.01^2)` on imputed pixels only; Quantus draws
  from NumPy's global generator, we from a ``torch.Generator``, so only ``noise=0`` compares
  value for value.
* **channels**: Quantus 0.6's ``ROAD`` raises ``IndexError`` on multi-channel images (it
  broadcasts a ``(B, 1, H, W)`` map over channels and indexes the ``C·H·W`` order into the
  ``H·W`` pixels); its ``noisy_linear_imputation`` handles channels like ours.
* **endpoints**: Quantus scores only the given percentages; our curves add the clean image
  (fraction 0) and the mean-colour image (fraction 1), needed for areas and normalisation.
* **solver**: Quantus builds a scipy sparse matrix per image and percentage and solves it with
  SuperLU in float64; we solve all of a chunk at once iteratively in the images' dtype.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lico_lightning._validation import (
    check_bool,
    check_choice,
    check_finite,
    check_int,
    check_logits,
    check_real,
    check_target,
    check_target_range,
    check_tensor,
)
from lico_lightning.functional.confidence import check_images_saliency, target_probability
from lico_lightning.functional.perturbation import _pixel_rank, curve_auc

__all__ = [
    "DEFAULT_ROAD_FRACTIONS",
    "DEFAULT_ROAD_NOISE",
    "ROAD_NEIGHBOUR_WEIGHTS",
    "ImputationConvergenceWarning",
    "confidence_normalized_curve",
    "noisy_linear_imputation",
    "road_auc",
    "road_curve_fractions",
    "road_curves",
    "road_removal_masks",
    "symmetric_relevance_gain",
]

Model = Callable[[Tensor], Tensor]
Order = Literal["morf", "lerf"]
Score = Literal["probability", "correct"]
Reduction = Literal["mean", "none"]

#: ROAD's removal fractions (Rong et al. 2022: 10 %, 20 %, ..., 90 % of the pixels).
DEFAULT_ROAD_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Standard deviation of the noise added to imputed pixels (ROAD: 0.01).
DEFAULT_ROAD_NOISE = 0.01
#: Neighbour weights of the imputation: 1/6 for the 4 direct neighbours, 1/12 for the diagonals
#: (row offset -1, 0, +1 by column offset -1, 0, +1; the centre is the pixel itself). The solver
#: applies them as a separable stencil (``_stencil_sum``); the tests check it against this table.
ROAD_NEIGHBOUR_WEIGHTS: tuple[tuple[float, float, float], ...] = (
    (1 / 12, 1 / 6, 1 / 12),
    (1 / 6, 0.0, 1 / 6),
    (1 / 12, 1 / 6, 1 / 12),
)
_COARSEST_PIXELS = 64  # a level with at most this many pixels is solved densely
_SMOOTHING_SWEEPS = 1  # Jacobi sweeps before and after each coarse correction
_JACOBI_WEIGHT = 0.9


class ImputationConvergenceWarning(UserWarning):
    """The conjugate-gradient solve of :func:`noisy_linear_imputation` stopped at ``max_iter``
    before its relative residual reached ``tol``."""


# ---------------------------------------------------------------------------------------------
# The imputation: one sparse system per (image, removal mask), solved for all channels at once
# ---------------------------------------------------------------------------------------------


def _stencil_sum(u: Tensor) -> Tensor:
    r"""The separable 3x3 sum :math:`(1, 2, 1)^\top (1, 2, 1) * u` with zeros outside the image,
    for ``(..., H, W)``: the neighbour weights are :math:`K = \tfrac1{12}\,(\text{this}) -
    \tfrac13 \delta`, so two 3-tap passes replace a 3x3 convolution (several times faster on
    CPU)."""
    rows = u * 2.0
    rows[..., 1:] += u[..., :-1]
    rows[..., :-1] += u[..., 1:]
    out = rows * 2.0
    out[..., 1:, :] += rows[..., :-1, :]
    out[..., :-1, :] += rows[..., 1:, :]
    return out


def _neighbour_sum(u: Tensor) -> Tensor:
    r""":math:`\sum_j w_{ij} u_j` over the in-image neighbours of every pixel (``K * u``)."""
    return _stencil_sum(u).mul_(1 / 12).sub_(u, alpha=1 / 3)


class _Level:
    r"""One grid of the multigrid hierarchy: the unknown mask ``m`` ``(N, 1, H, W)`` (1 =
    removed pixel), the in-image neighbour weight sum ``d`` ``(1, 1, H, W)`` (the diagonal of
    the system) and the operator :math:`A u = m \odot (d \odot u - K * u)` on vectors that
    vanish outside ``m``, computed as :math:`m (d + \tfrac13) u - \tfrac{m}{12} S(u)` with
    :math:`S` of :func:`_stencil_sum`."""

    def __init__(self, unknown: Tensor) -> None:
        self.m = unknown
        ones = torch.ones((1, 1, *unknown.shape[-2:]), dtype=unknown.dtype, device=unknown.device)
        d = _neighbour_sum(ones)
        self.diagonal = unknown * (d + 1 / 3)
        self.m_12 = unknown / 12
        self.smoother = _JACOBI_WEIGHT * unknown / d  # damped Jacobi: omega m / d

    def apply(self, u: Tensor) -> Tensor:
        return torch.addcmul(self.diagonal * u, self.m_12, _stencil_sum(u), value=-1.0)


def _coarsen(unknown: Tensor) -> Tensor:
    """A coarse cell is unknown only when all its (up to 4) fine cells are (odd edges padded as
    known), so the coarse correction lives inside the removed regions."""
    h, w = unknown.shape[-2:]
    padded = F.pad(unknown, (0, w % 2, 0, h % 2))
    return -F.max_pool2d(-padded, 2)


def _restrict(r: Tensor) -> Tensor:
    """Sum of each cell's (up to 4) children: the transpose of :func:`_prolong`."""
    h, w = r.shape[-2:]
    if h % 2 or w % 2:
        r = F.pad(r, (0, w % 2, 0, h % 2))
    return F.avg_pool2d(r, 2).mul_(4.0)


def _prolong(e: Tensor, size: tuple[int, int]) -> Tensor:
    """Piecewise-constant interpolation of a coarse correction onto the fine grid."""
    n, c, h, w = e.shape
    fine = e[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)
    return fine[..., : size[0], : size[1]]


class _Hierarchy:
    """Multigrid V-cycle preconditioner for the masked systems of one batch.

    The coarse operators are the same stencil on coarser grids (rediscretisation), the
    restriction is the transpose of the piecewise-constant prolongation and the smoother is
    damped Jacobi with as many sweeps after as before, so the preconditioner is symmetric
    positive definite and conjugate gradients on the *fine* system converge to its exact
    solution whatever the coarse grids' quality (they only set the speed).
    """

    def __init__(self, unknown: Tensor) -> None:
        self.levels = [_Level(unknown)]
        while self.levels[-1].m.shape[-2] * self.levels[-1].m.shape[-1] > _COARSEST_PIXELS:
            self.levels.append(_Level(_coarsen(self.levels[-1].m)))
        self._factor_coarsest()

    def _factor_coarsest(self) -> None:
        level = self.levels[-1]
        n_img, _, h, w = level.m.shape
        size = h * w
        eye = torch.eye(size, dtype=level.m.dtype, device=level.m.device).view(1, size, h, w)
        basis = level.m.view(n_img, 1, h, w) * eye  # (N, size, h, w): masked unit vectors
        columns = level.apply(basis).view(n_img, size, size)  # [:, j] = A e_j (symmetric)
        known = 1.0 - level.m.view(n_img, size)
        matrix = columns.transpose(1, 2) + torch.diag_embed(known)
        self.lu, self.pivots = torch.linalg.lu_factor(matrix)

    def _solve_coarsest(self, r: Tensor) -> Tensor:
        level = self.levels[-1]
        n_img, c, h, w = r.shape
        rhs = r.reshape(n_img, c, h * w).transpose(1, 2)
        x = torch.linalg.lu_solve(self.lu, self.pivots, rhs)
        return level.m * x.transpose(1, 2).reshape(n_img, c, h, w)

    def precondition(self, r: Tensor, index: int = 0) -> Tensor:
        if index == len(self.levels) - 1:
            return self._solve_coarsest(r)
        level = self.levels[index]
        x = level.smoother * r
        for _ in range(_SMOOTHING_SWEEPS - 1):
            x.addcmul_(level.smoother, r - level.apply(x))
        coarse = self.precondition(_restrict(r - level.apply(x)), index + 1)
        x += _prolong(coarse, (r.shape[-2], r.shape[-1]))
        for _ in range(_SMOOTHING_SWEEPS):
            x.addcmul_(level.smoother, r - level.apply(x))
        return x


def _solve(images: Tensor, unknown: Tensor, tol: float, max_iter: int) -> Tensor:
    r"""Values of the removed pixels: the solution ``u`` (zero outside ``unknown``) of
    :math:`A u = m \odot (K * ((1 - m) \odot x))` by preconditioned conjugate gradients,
    each ``(image, channel)`` system with its own step sizes and stopping test."""
    hierarchy = _Hierarchy(unknown)
    fine = hierarchy.levels[0]
    b = fine.m * _neighbour_sum((1.0 - fine.m) * images)

    n, c, h, w = images.shape

    def dot(a: Tensor, e: Tensor) -> Tensor:  # (N, C, 1, 1) inner products over pixels
        return (a * e).view(n * c, h * w).sum(-1).view(n, c, 1, 1)

    x = torch.zeros_like(images)
    r = b.clone()
    b_norm = dot(b, b).sqrt()
    threshold = tol * b_norm
    z = hierarchy.precondition(r)
    p = z.clone()
    rz = dot(r, z)
    converged = False
    for _ in range(max_iter):
        if bool((dot(r, r).sqrt() <= threshold).all()):
            converged = True
            break
        ap = fine.apply(p)
        pap = dot(p, ap)
        alpha = torch.where(pap > 0, rz / pap.clamp_min(torch.finfo(pap.dtype).tiny), 0.0)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1.0)
        z = hierarchy.precondition(r)
        rz_new = dot(r, z)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(torch.finfo(rz.dtype).tiny), 0.0)
        p = z.addcmul_(beta, p)
        rz = rz_new
    if not converged and not bool((dot(r, r).sqrt() <= threshold).all()):
        worst = float((dot(r, r).sqrt() / b_norm.clamp_min(1e-30)).max())
        warnings.warn(
            f"ROAD imputation: conjugate gradients stopped after max_iter={max_iter} iterations "
            f"at relative residual {worst:.2e} > tol={tol:.1e}; increase `max_iter` or `tol`.",
            ImputationConvergenceWarning,
            stacklevel=3,
        )
    return x


def _draw_noise(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else like.device
    noise = torch.randn(shape, generator=generator, device=device, dtype=like.dtype)
    return noise.to(like.device)


def noisy_linear_imputation(
    images: Tensor,
    removed: Tensor,
    noise: float = DEFAULT_ROAD_NOISE,
    *,
    generator: torch.Generator | None = None,
    tol: float = 1e-5,
    max_iter: int = 100,
) -> Tensor:
    r"""ROAD's noisy linear imputation (Rong et al., ICML 2022, §4.2): every removed pixel
    takes the weighted mean of its in-image neighbours, plus Gaussian noise.

    The removed values :math:`u` of one image solve one sparse linear system (the known pixels
    are constants), channel by channel:

    .. math::
        u_i = \frac{\sum_{j \in \mathcal N(i)} w_{ij}\, v_j}{\sum_{j \in \mathcal N(i)} w_{ij}},
        \qquad v_j = \begin{cases} u_j & j \text{ removed} \\ x_j & \text{otherwise}\end{cases},
        \qquad \tilde x_i = u_i + \sigma \varepsilon_i,\ \varepsilon_i \sim \mathcal N(0, 1)

    with :math:`\mathcal N(i)` the 8 neighbours inside the image, :math:`w = 1/6` for the 4
    direct ones and :math:`1/12` for the diagonals. Kept pixels are returned unchanged. The
    system is symmetric positive definite when at least one pixel is kept (every removed
    region then touches a kept pixel); all ``B × C`` systems are solved at once by conjugate
    gradients preconditioned with a multigrid V-cycle, stopped when each system's residual
    falls below ``tol`` times its right-hand side's norm (``tol=1e-5`` in float32: within
    1e-3 of a direct sparse solve, 10x below ROAD's noise; see the module docstring).

    Args:
        images: ``(B, C, H, W)`` finite images, ``H, W >= 3``.
        removed: ``(B, H, W)`` bool, True = the pixel is removed (imputed); at least one pixel
            of each image must be kept.
        noise: standard deviation :math:`\sigma` of the noise added to imputed pixels (ROAD:
            0.01, in the units of ``images``); 0 for the plain linear imputation.
        generator: ``torch.Generator`` of the noise (its device may differ from the images');
            ``None``: the global generator.
        tol: relative residual at which conjugate gradients stop, in (0, 1).
        max_iter: at most this many iterations (an
            :class:`ImputationConvergenceWarning` names the knob when it is reached).

    Returns:
        ``(B, C, H, W)`` imputed images.

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)  # a linear ramp is its own imputation
        >>> removed = torch.zeros(1, 4, 4, dtype=torch.bool)
        >>> removed[0, 1:3, 1:3] = True
        >>> out = noisy_linear_imputation(x, removed, noise=0.0)
        >>> torch.allclose(out, x, atol=1e-4)
        True
    """
    _check_images(images)
    check_tensor("removed", removed, 3)
    if removed.dtype != torch.bool or removed.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"Expected `removed` to be a bool tensor of shape (B, H, W) = "
            f"{(images.shape[0], *images.shape[2:])}, but got {removed.dtype} "
            f"{tuple(removed.shape)}."
        )
    if bool(removed.flatten(1).all(1).any()):
        raise ValueError(
            "Expected `removed` to keep at least one pixel of every image (the imputation "
            "system is singular without one), but got a mask removing every pixel."
        )
    check_real("noise", noise, low=0.0, strict=False)
    _check_solver(tol, max_iter)
    return _impute(images, removed, noise, generator, tol, max_iter)


def _check_images(images: Tensor) -> None:
    check_tensor("images", images, 4, floating=True)
    if images.shape[-2] < 3 or images.shape[-1] < 3:
        raise ValueError(
            f"Expected `images` of at least 3x3 pixels (ROAD imputes from 8 neighbours), but "
            f"got shape {tuple(images.shape)}."
        )
    check_finite("images", images)


def _check_solver(tol: float, max_iter: int) -> None:
    check_real("tol", tol, low=0.0, high=1.0)
    check_int("max_iter", max_iter, 1)


def _impute(
    images: Tensor,
    removed: Tensor,
    noise: float,
    generator: torch.Generator | None,
    tol: float,
    max_iter: int,
) -> Tensor:
    m = removed.unsqueeze(1).to(images.dtype)
    if not bool(removed.any()):
        return images.clone()
    u = _solve(images, m, tol, max_iter)
    out = (1.0 - m) * images + u
    if noise > 0:
        out = out + noise * m * _draw_noise(images.shape, images, generator)
    return out


# ---------------------------------------------------------------------------------------------
# Removal orders and curves
# ---------------------------------------------------------------------------------------------


def _check_fractions(fractions: Sequence[float] | Tensor) -> list[float]:
    values = fractions.tolist() if isinstance(fractions, Tensor) else list(fractions)
    if (
        not values
        or any(isinstance(f, bool) or not isinstance(f, (int, float)) for f in values)
        or any(not 0.0 < f < 1.0 for f in values)
        or any(b <= a for a, b in itertools.pairwise(values))
    ):
        raise ValueError(
            "Expected `fractions` to be a non-empty increasing sequence of removal fractions in "
            f"(0, 1) (percentages / 100), but got {values!r}."
        )
    return [float(f) for f in values]


def road_curve_fractions(fractions: Sequence[float] | Tensor = DEFAULT_ROAD_FRACTIONS) -> Tensor:
    """The x-axis of a ROAD curve: ``0``, the removal ``fractions``, ``1``.

    Args:
        fractions: ``(P,)`` increasing removal fractions in (0, 1) (percentages / 100); anything
            else raises ``ValueError``.

    Returns:
        ``(P+2,)`` float32.

    Example:
        >>> road_curve_fractions([0.25, 0.5])
        tensor([0.0000, 0.2500, 0.5000, 1.0000])
    """
    return torch.tensor([0.0, *_check_fractions(fractions), 1.0], dtype=torch.float32)


def _removed_counts(fractions: list[float], hw: int) -> list[int]:
    """``k = floor(f · HW)`` pixels per fraction (a 1e-6 guard absorbs float error, so 0.29 of
    100 pixels is 29), at most ``HW - 1`` (one pixel always stays)."""
    return [min(math.floor(f * hw + 1e-6), hw - 1) for f in fractions]


def _check_orders(orders: Sequence[str]) -> tuple[Order, ...]:
    if isinstance(orders, str) or not orders or len(set(orders)) != len(orders):
        raise ValueError(
            f"Expected `orders` to be a non-empty sequence of distinct orders from "
            f"['lerf', 'morf'], but got {orders!r}."
        )
    for order in orders:
        check_choice("orders", order, ["morf", "lerf"])
    return tuple(orders)  # type: ignore[arg-type]


def _ranks(saliency: Tensor, orders: Sequence[Order]) -> Tensor:
    """``(O, B, H, W)`` position of each pixel in each order's removal sequence."""
    return torch.stack(
        [_pixel_rank(saliency if o == "morf" else -saliency).squeeze(1) for o in orders]
    )


def road_removal_masks(
    saliency: Tensor,
    fractions: Sequence[float] | Tensor = DEFAULT_ROAD_FRACTIONS,
    order: Order = "morf",
) -> Tensor:
    r"""Which pixels ROAD removes at each fraction: the :math:`k = \lfloor f \cdot HW \rfloor`
    most relevant (``"morf"``) or least relevant (``"lerf"``) pixels of each map.

    Pixels are ranked by decreasing saliency for MoRF and by increasing saliency for LeRF,
    ties broken by the lower row-major index first in both orders (a stable sort, as
    :func:`~lico_lightning.functional.perturbation_curve`). At most :math:`HW - 1` pixels are
    removed (one stays, so the imputation system has a solution).

    Args:
        saliency: ``(B, H, W)`` finite maps.
        fractions: ``(P,)`` increasing removal fractions in (0, 1).
        order: ``"morf"`` (most relevant first) or ``"lerf"`` (least relevant first).

    Returns:
        ``(B, P, H, W)`` bool, True = removed.

    Example:
        >>> s = torch.tensor([[[0.9, 0.1], [0.5, 0.3]]])
        >>> road_removal_masks(s, [0.5], "morf")[0, 0].int()
        tensor([[1, 0],
                [1, 0]], dtype=torch.int32)
        >>> road_removal_masks(s, [0.5], "lerf")[0, 0].int()
        tensor([[0, 1],
                [0, 1]], dtype=torch.int32)
    """
    check_tensor("saliency", saliency, 3, floating=True)
    check_finite("saliency", saliency)
    check_choice("order", order, ["morf", "lerf"])
    values = _check_fractions(fractions)
    h, w = saliency.shape[-2:]
    counts = torch.tensor(_removed_counts(values, h * w), device=saliency.device)
    rank = _ranks(saliency, [order])[0]
    return rank[:, None] < counts.view(1, -1, 1, 1)


def _score(logits: Tensor, target: Tensor, score: Score) -> Tensor:
    if score == "probability":
        return target_probability(logits, target)
    return (logits.argmax(1) == target).float()


def road_curves(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    target: Tensor,
    fractions: Sequence[float] | Tensor = DEFAULT_ROAD_FRACTIONS,
    *,
    orders: Sequence[Order] = ("morf", "lerf"),
    noise: float = DEFAULT_ROAD_NOISE,
    generator: torch.Generator | None = None,
    score: Score = "probability",
    chunk_size: int = 64,
    tol: float = 1e-5,
    max_iter: int = 100,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""ROAD's most- and least-relevant-first curves (Rong et al., ICML 2022): the model's
    score on images whose top (MoRF) or bottom (LeRF) pixels are removed by
    :func:`noisy_linear_imputation`.

    For each fraction :math:`f` the :math:`k = \lfloor f \cdot HW \rfloor` pixels of
    :func:`road_removal_masks` are imputed and the target's softmax probability (``score=
    "probability"``) or the indicator that the target is the arg-max class (``"correct"``:
    ROAD's accuracy) is recorded:

    .. math::
        y^{o}_b(f) = p_{t_b}\big(\operatorname{ROAD}(x_b, \text{the } k \text{ first pixels
        of } o)\big), \qquad o \in \{\text{MoRF}, \text{LeRF}\}

    Both curves are closed at :math:`f = 0` by the clean image and at :math:`f = 1` by the
    fully removed image :math:`x^{(0)}`: the per-channel mean colour of the image plus the same
    noise (the imputation system has no unique solution without a kept pixel; constants are
    its solutions, and the mean is ROAD's "fixed" imputation). The endpoints are shared by
    both orders (one forward each) and cancel in :func:`symmetric_relevance_gain`. All
    ``B · (2 + O·P)`` images are imputed and scored in chunks of ``chunk_size`` (the model
    must treat samples independently, e.g. eval mode). The noise draws follow the chunks, so
    with ``noise > 0`` the values depend on ``chunk_size`` and ``generator``'s state.

    Args:
        model: callable ``(B, C, H, W) -> (B, num_classes)`` logits, called under ``no_grad``.
        images: ``(B, C, H, W)`` finite, ``H, W >= 3``.
        saliency: ``(B, H, W)`` finite maps.
        target: ``(B,)`` long.
        fractions: ``(P,)`` increasing removal fractions in (0, 1) (ROAD: 0.1, ..., 0.9).
        orders: any of ``"morf"``, ``"lerf"``.
        noise: standard deviation of the imputation noise (ROAD: 0.01).
        generator: ``torch.Generator`` of the noise (``None``: the global one).
        score: ``"probability"`` (softmax of the target) or ``"correct"`` (0/1 accuracy).
        chunk_size: imputed images per solve and forward pass (the solve holds about 12
            image-sized buffers per image of a chunk).
        tol: relative residual of the imputation solve (see :func:`noisy_linear_imputation`).
        max_iter: conjugate-gradient iterations at most.

    Returns:
        ``(fractions (P+2,), {order: scores (B, P+2)})``, fractions ``0, f_1, ..., f_P, 1``.

    Example:
        >>> model = lambda x: torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)
        >>> frac, curves = road_curves(model, torch.rand(2, 1, 5, 5), torch.rand(2, 5, 5),
        ...     torch.tensor([0, 1]), [0.25, 0.5], generator=torch.Generator().manual_seed(0))
        >>> frac
        tensor([0.0000, 0.2500, 0.5000, 1.0000])
        >>> sorted(curves), curves["morf"].shape
        (['lerf', 'morf'], torch.Size([2, 4]))
    """
    _check_images(images)
    check_images_saliency(images, saliency)
    check_target(target, images.shape[0])
    values = _check_fractions(fractions)
    order_list = _check_orders(orders)
    check_real("noise", noise, low=0.0, strict=False)
    check_choice("score", score, ["probability", "correct"])
    check_int("chunk_size", chunk_size, 1)
    _check_solver(tol, max_iter)
    b, _, h, w = images.shape
    device = images.device
    counts = _removed_counts(values, h * w)
    n_fr = len(values)
    # jobs per image: 0 = clean, then P per order, last = fully removed
    job_order = [0] + [o for o in range(len(order_list)) for _ in values] + [0]
    job_count = [0] + counts * len(order_list) + [0]
    n_jobs = len(job_order)
    job_order_t = torch.tensor(job_order, device=device)
    job_count_t = torch.tensor(job_count, device=device)
    with torch.no_grad():
        ranks = _ranks(saliency, order_list)
        scores = torch.empty(b * n_jobs, dtype=torch.float32, device=device)
        total = b * n_jobs
        for lo in range(0, total, chunk_size):
            flat = torch.arange(lo, min(lo + chunk_size, total), device=device)
            bi, ji = flat // n_jobs, flat % n_jobs
            removed = ranks[job_order_t[ji], bi] < job_count_t[ji].view(-1, 1, 1)
            x = _impute(images[bi], removed, noise, generator, tol, max_iter)
            last = ji == n_jobs - 1
            if bool(last.any()):
                base = images[bi[last]].mean((-2, -1), keepdim=True).expand(-1, -1, h, w)
                if noise > 0:
                    base = base + noise * _draw_noise(base.shape, base, generator)
                x[last] = base
            logits = check_logits(model(x), x.shape[0])
            if lo == 0:  # the class count is known from the first chunk
                check_target_range(target, logits.shape[1])
            scores[lo : lo + flat.numel()] = _score(logits, target[bi], score)
    scores = scores.view(b, n_jobs)
    curves: dict[str, Tensor] = {}
    for o, order in enumerate(order_list):
        middle = scores[:, 1 + o * n_fr : 1 + (o + 1) * n_fr]
        curves[order] = torch.cat([scores[:, :1], middle, scores[:, -1:]], dim=1)
    return road_curve_fractions(values).to(device), curves


# ---------------------------------------------------------------------------------------------
# Pure functions on curves
# ---------------------------------------------------------------------------------------------


def confidence_normalized_curve(scores: Tensor, clean: Tensor, baseline: Tensor) -> Tensor:
    r"""Confidence-normalised curve, as PAIR's performance information curves (Kapishnikov et
    al., 2021): each point as a share of the way from the fully removed image's score to the
    clean image's, clipped to [0, 1].

    .. math::
        \tilde p_k = \operatorname{clip}\!\left(\frac{p(x_k) - p(x_0)}{p(x) - p(x_0)},\ 0,\ 1
        \right)

    The curve no longer carries the model's clean confidence, so areas of confident and
    unconfident images are comparable. As in PAIR, a curve is undefined when the clean score
    does not exceed the baseline's (:math:`p(x) \le p(x_0)`): its row is NaN, for the caller
    to skip.

    Args:
        scores: ``(..., n)`` finite curve values :math:`p(x_k)`.
        clean: ``(...)`` the clean image's score :math:`p(x)` (e.g. ``scores[..., 0]`` of a
            removal curve).
        baseline: ``(...)`` the fully removed image's score :math:`p(x_0)` (e.g.
            ``scores[..., -1]`` of a removal curve).

    Returns:
        ``(..., n)`` values in [0, 1], NaN rows where ``clean <= baseline``.

    Example:
        >>> curve = torch.tensor([[0.8, 0.5, 0.3, 0.1], [0.2, 0.3, 0.2, 0.4]])
        >>> confidence_normalized_curve(curve, curve[:, 0], curve[:, -1])
        tensor([[1.0000, 0.5714, 0.2857, 0.0000],
                [   nan,    nan,    nan,    nan]])
    """
    check_tensor("scores", scores, floating=True)
    if scores.ndim < 1:
        raise ValueError("Expected `scores` of shape (..., n), but got a 0-dim tensor.")
    for name, value in (("clean", clean), ("baseline", baseline)):
        check_tensor(name, value, floating=True, nonempty=False)
        if value.shape != scores.shape[:-1]:
            raise ValueError(
                f"Expected `{name}` of shape {tuple(scores.shape[:-1])} (one per curve of "
                f"`scores` {tuple(scores.shape)}), but got {tuple(value.shape)}."
            )
        check_finite(name, value)
    check_finite("scores", scores)
    span = (clean - baseline).unsqueeze(-1)
    normalized = ((scores - baseline.unsqueeze(-1)) / span.clamp_min(1e-30)).clamp(0.0, 1.0)
    return torch.where(span > 0, normalized, torch.full_like(normalized, float("nan")))


def symmetric_relevance_gain(lerf: Tensor, morf: Tensor, fractions: Tensor | None = None) -> Tensor:
    r"""Symmetric relevance gain (Blücher et al., TMLR 2024): the area under the
    least-relevant-first curve minus the area under the most-relevant-first curve.

    .. math::
        \mathrm{SRG} = \int_0^1 y^{\text{LeRF}}(f)\, df - \int_0^1 y^{\text{MoRF}}(f)\, df

    A map that ranks the evidence well keeps the score up while the least relevant pixels go
    (high LeRF) and drops it fast while the most relevant go (low MoRF); a map independent of
    the image scores 0 in expectation, since both orders are then the same random order. Any
    removal protocol works (ROAD's :func:`road_curves`, or blur/zero deletion curves of
    :func:`~lico_lightning.functional.perturbation_curve` with the saliency negated for LeRF).
    Areas by the trapezoid rule (:func:`~lico_lightning.functional.curve_auc`).

    Args:
        lerf: ``(..., n+1)`` least-relevant-first curves.
        morf: ``(..., n+1)`` most-relevant-first curves, same fractions.
        fractions: ``(n+1,)`` increasing from 0 to 1; ``None``: evenly spaced.

    Returns:
        ``(...)`` gains in [-1, 1] for scores in [0, 1].

    Example:
        >>> symmetric_relevance_gain(torch.tensor([1.0, 0.9, 0.0]), torch.tensor([1.0, 0.1, 0.0]))
        tensor(0.4000)
    """
    check_tensor("lerf", lerf, floating=True)
    check_tensor("morf", morf, floating=True)
    if lerf.shape != morf.shape:
        raise ValueError(
            f"Expected `lerf` and `morf` of the same shape, but got {tuple(lerf.shape)} and "
            f"{tuple(morf.shape)}."
        )
    return curve_auc(lerf, fractions) - curve_auc(morf, fractions)


def road_auc(
    model: Model,
    images: Tensor,
    saliency: Tensor,
    target: Tensor,
    fractions: Sequence[float] | Tensor = DEFAULT_ROAD_FRACTIONS,
    *,
    noise: float = DEFAULT_ROAD_NOISE,
    generator: torch.Generator | None = None,
    score: Score = "probability",
    normalize: bool = False,
    chunk_size: int = 64,
    tol: float = 1e-5,
    max_iter: int = 100,
    reduction: Reduction = "mean",
) -> tuple[Tensor, Tensor]:
    r"""Areas under ROAD's MoRF and LeRF curves (:func:`road_curves`); their difference
    LeRF - MoRF is the :func:`symmetric_relevance_gain`.

    .. math::
        \mathrm{AUC}^{o} = \int_0^1 y^{o}(f)\, df, \qquad o \in \{\text{MoRF}, \text{LeRF}\}

    Lower MoRF and higher LeRF are better. With ``normalize=True`` each curve first goes
    through :func:`confidence_normalized_curve` (clean = the :math:`f = 0` point, baseline =
    the :math:`f = 1` point); images whose clean score does not exceed the baseline's get NaN
    and are left out of the ``"mean"``.

    Args: as :func:`road_curves`, plus ``normalize`` and ``reduction`` (``"mean"`` or
        ``"none"``).

    Returns:
        ``(morf, lerf)``, each a scalar or ``(B,)``.

    Example:
        >>> model = lambda x: torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)
        >>> morf, lerf = road_auc(model, torch.rand(2, 1, 5, 5), torch.rand(2, 5, 5),
        ...     torch.tensor([0, 1]), [0.25, 0.5], reduction="none")
        >>> morf.shape, lerf.shape
        (torch.Size([2]), torch.Size([2]))
    """
    check_bool("normalize", normalize)
    check_choice("reduction", reduction, ["mean", "none"])
    frac, curves = road_curves(
        model,
        images,
        saliency,
        target,
        fractions,
        noise=noise,
        generator=generator,
        score=score,
        chunk_size=chunk_size,
        tol=tol,
        max_iter=max_iter,
    )
    morf, lerf = _curve_aucs(frac, curves["morf"], curves["lerf"], normalize)
    if reduction == "mean":
        return morf.nanmean(), lerf.nanmean()
    return morf, lerf


def _curve_aucs(frac: Tensor, morf: Tensor, lerf: Tensor, normalize: bool) -> tuple[Tensor, Tensor]:
    """Per-image AUCs of two curves sharing their endpoints; NaN where normalisation is
    undefined."""
    if not normalize:
        return curve_auc(morf, frac), curve_auc(lerf, frac)
    clean, baseline = morf[:, 0], morf[:, -1]
    out = []
    for curve in (morf, lerf):
        normalized = confidence_normalized_curve(curve, clean, baseline)
        valid = ~normalized.isnan().any(-1)
        auc = curve_auc(torch.nan_to_num(normalized), frac)
        out.append(torch.where(valid, auc, torch.full_like(auc, float("nan"))))
    return out[0], out[1]
