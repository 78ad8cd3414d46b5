"""``nn.Module`` forms of LICO's losses: hyperparameters and the learnable temperature.

The formulas live in :mod:`lico_lightning.functional.lico`; these classes only hold state.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from lico_lightning._validation import check_choice, check_int, check_positive, check_real
from lico_lightning.functional.lico import (
    LOSS_REDUCTIONS,
    MM_DISTANCES,
    manifold_matching_loss,
    sinkhorn_ot_loss,
)

__all__ = ["ManifoldMatchingLoss", "SinkhornOTLoss"]


class ManifoldMatchingLoss(nn.Module):
    r"""LICO manifold matching loss (paper eqs. 1–2) with a learnable temperature.

    Calls :func:`~lico_lightning.functional.manifold_matching_loss` with
    :math:`\tau = \exp(\mathrm{clamp}(\theta, \log\tau_{min}, \log\tau_{max}))`.

    **Parameterisation.** The module stores :math:`\theta = \log\tau` (``log_temperature``): τ
    stays positive without constraints, and a gradient step changes τ by a relative amount
    whatever its scale. It is an ``nn.Parameter`` when ``learn_temperature`` (the paper learns
    τ), otherwise a buffer (not returned by ``parameters()``); both are saved under the same
    ``state_dict`` key, so checkpoints load either way. The clamp is applied in ``forward``
    (outside the range the loss gives θ no gradient), so the effective τ (:attr:`temperature`)
    never leaves ``[min_temperature, max_temperature]``.

    **Defaults.** ``normalize=True``: the flattened features are L2-normalised, so Euclidean
    distances lie in [0, 2] for any backbone (WRN's 128×64 or ResNet-50's 2048×49 maps alike)
    and one τ fits all; with raw features the distances grow with √(C·H·W) and τ would have to
    follow them. τ₀ = 0.07 is CLIP's initial temperature, chosen there for cosine
    similarities, whose range [−1, 1] has the same width as this distance range; it is also
    the official LICO code's initial value (as ``log(1/0.07)``). Range [0.01, 1]: CLIP caps
    its logit scale at 100 (τ ≥ 0.01), and at τ = 1 the logits span at most 2 nats, close to
    uniform rows.

    **Caveat (learnable τ).** Both adjacencies tend to the uniform distribution as τ grows, so
    the KL can be lowered by raising τ alone; expect a learned τ to drift towards
    ``max_temperature``. Exclude ``log_temperature`` from weight decay (decay pulls θ to 0,
    i.e. τ to 1), or set ``learn_temperature=False`` for a fixed τ.

    Args:
        temperature: initial (or fixed) τ > 0.
        learn_temperature: make log τ a trainable parameter.
        min_temperature: lower clamp of τ (> 0).
        max_temperature: upper clamp of τ (> ``min_temperature``).
        distance: ``"euclidean"`` (paper default, Table 7) or ``"cosine"``.
        normalize: L2-normalise each flattened sample before the distance.
        exclude_diagonal: leave the self-distance out of each row (see the functional form).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shapes:
        - image_features: ``(B, ...)``, e.g. ``(B, C, L)`` feature maps with L = H·W.
        - text_features: ``(B, ...)``, e.g. ``(B, M, L)`` mapped prompt tokens.
        - output: scalar, or ``(B,)`` for ``reduction="none"``.

    Example:
        >>> loss_fn = ManifoldMatchingLoss()
        >>> g = torch.Generator().manual_seed(0)
        >>> loss = loss_fn(torch.randn(4, 8, 6, generator=g), torch.randn(4, 3, 6, generator=g))
        >>> loss.backward()
        >>> loss_fn.log_temperature.grad is not None
        True
        >>> round(loss_fn.temperature.item(), 4)
        0.07
    """

    def __init__(
        self,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
        distance: Literal["euclidean", "cosine"] = "euclidean",
        normalize: bool = True,
        exclude_diagonal: bool = True,
        reduction: Literal["mean", "sum", "none"] = "mean",
    ) -> None:
        super().__init__()
        temperature = check_real("temperature", temperature)
        min_temperature = check_real("min_temperature", min_temperature)
        max_temperature = check_real("max_temperature", max_temperature)
        check_positive("min_temperature", min_temperature)
        if not max_temperature > min_temperature:
            raise ValueError(
                f"Expected `max_temperature` > `min_temperature` = {min_temperature!r}, but got "
                f"{max_temperature!r}."
            )
        if not min_temperature <= temperature <= max_temperature:
            raise ValueError(
                f"Expected `temperature` in [{min_temperature!r}, {max_temperature!r}] "
                f"(`min_temperature`, `max_temperature`), but got {temperature!r}."
            )
        check_choice("distance", distance, MM_DISTANCES)
        check_choice("reduction", reduction, LOSS_REDUCTIONS)
        self.learn_temperature = bool(learn_temperature)
        self.min_temperature = min_temperature
        self.max_temperature = max_temperature
        self.distance = distance
        self.normalize = bool(normalize)
        self.exclude_diagonal = bool(exclude_diagonal)
        self.reduction = reduction
        log_tau = torch.tensor(math.log(temperature), dtype=torch.float32)
        if self.learn_temperature:
            self.log_temperature = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_temperature", log_tau)

    @property
    def temperature(self) -> Tensor:
        """The effective τ (0-dim tensor, clamped; differentiable w.r.t. ``log_temperature``)."""
        low, high = math.log(self.min_temperature), math.log(self.max_temperature)
        return self.log_temperature.clamp(low, high).exp()

    def forward(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """Return :math:`\\mathcal{L}_{MM}` for image features F and prompt features G."""
        return manifold_matching_loss(
            image_features,
            text_features,
            temperature=self.temperature,
            distance=self.distance,
            normalize=self.normalize,
            exclude_diagonal=self.exclude_diagonal,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature.item():.4g}, learn_temperature={self.learn_temperature}, "
            f"range=[{self.min_temperature:g}, {self.max_temperature:g}], "
            f"distance={self.distance!r}, normalize={self.normalize}, "
            f"exclude_diagonal={self.exclude_diagonal}, reduction={self.reduction!r}"
        )


class SinkhornOTLoss(nn.Module):
    r"""LICO optimal-transport loss (paper eqs. 3–7), batched log-domain Sinkhorn.

    Holds the solver settings and calls :func:`~lico_lightning.functional.sinkhorn_ot_loss`
    (see there for the formula, the returned value and the envelope gradient). No parameters.

    Args:
        epsilon: entropic regularisation ε > 0 (0.1 in the official code; cost lies in [0, 2]).
        max_iter: maximum number of Sinkhorn iterations (≥ 1). Memory does not depend on it.
        tol: tolerance on the L2 row-marginal error (≥ 0); a
            :class:`~lico_lightning.functional.SinkhornConvergenceWarning` is issued when it is
            not met within ``max_iter``.
        reduction: ``"mean"`` (paper), ``"sum"`` or ``"none"``.

    Shapes:
        - image_tokens: ``(B, N, L)``, the N feature maps flattened to L = H·W.
        - text_tokens: ``(B, M, L)``, the mapped prompt tokens.
        - output: scalar, or ``(B,)`` for ``reduction="none"``.

    Example:
        >>> loss_fn = SinkhornOTLoss(epsilon=0.1)
        >>> g = torch.Generator().manual_seed(0)
        >>> img = torch.randn(2, 6, 4, generator=g, requires_grad=True)
        >>> loss_fn(img, torch.randn(2, 3, 4, generator=g)).backward()
        >>> img.grad.shape
        torch.Size([2, 6, 4])
    """

    def __init__(
        self,
        epsilon: float = 0.1,
        max_iter: int = 100,
        tol: float = 1e-5,
        reduction: Literal["mean", "sum", "none"] = "mean",
    ) -> None:
        super().__init__()
        epsilon = check_real("epsilon", epsilon, low=0.0)
        check_int("max_iter", max_iter, 1)
        tol = check_real("tol", tol, low=0.0, strict=False)
        check_choice("reduction", reduction, LOSS_REDUCTIONS)
        self.epsilon = epsilon
        self.max_iter = max_iter
        self.tol = tol
        self.reduction = reduction

    def forward(
        self,
        image_tokens: Tensor,
        text_tokens: Tensor,
        image_weights: Tensor | None = None,
        text_weights: Tensor | None = None,
        return_plan: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Return :math:`\\mathcal{L}_{OT}` (and the plans ``(B, N, M)`` if ``return_plan``)."""
        return sinkhorn_ot_loss(
            image_tokens,
            text_tokens,
            epsilon=self.epsilon,
            max_iter=self.max_iter,
            tol=self.tol,
            image_weights=image_weights,
            text_weights=text_weights,
            reduction=self.reduction,
            return_plan=return_plan,
        )

    def extra_repr(self) -> str:
        return (
            f"epsilon={self.epsilon:g}, max_iter={self.max_iter}, tol={self.tol:g}, "
            f"reduction={self.reduction!r}"
        )
