"""Model-parameter randomisation test (Adebayo et al., 2018; LICO §4.3 "Sanity checks").

A saliency method that explains the *model* must change when the model's weights are
randomised. Two schemes: **cascading** randomisation from the top (logits) to the bottom
layers, each step keeping the layers randomised so far, and **independent** randomisation of
one layer at a time. The result is the Spearman rank correlation between the original and the
randomised maps per layer (low = the method passes).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from lico_lightning._validation import check_choice
from lico_lightning.explain._saliency.base import Explainer
from lico_lightning.explain._saliency.hooks import resolve_layer
from lico_lightning.functional import spearman_correlation

__all__ = ["ParameterRandomizationResult", "parameter_randomization", "randomizable_layers"]


@dataclass
class ParameterRandomizationResult:
    """Outcome of :func:`parameter_randomization`.

    Attributes:
        mode: ``"cascading"`` or ``"independent"``.
        layers: randomised layer names, in the order they were randomised.
        correlation: ``(len(layers), B)`` Spearman correlation with the original maps.
        original: ``(B, H, W)`` maps of the untouched model.
        randomized: ``(len(layers), B, H, W)`` maps after each randomisation step.
    """

    mode: str
    layers: list[str]
    correlation: Tensor
    original: Tensor
    randomized: Tensor = field(repr=False)

    def as_dict(self) -> dict[str, float]:
        """Mean correlation over the batch per layer, ``{layer: rho}``."""
        return {name: float(c) for name, c in zip(self.layers, self.correlation.mean(1))}


def randomizable_layers(model: nn.Module) -> list[str]:
    """Names of modules that own parameters directly, from the output back to the input
    (reverse registration order, the usual "top to bottom" of Adebayo et al.).

    Example:
        >>> randomizable_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)))
        ['3', '0']
    """
    names = [
        n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))
    ]
    return names[::-1]


def _randomize(module: nn.Module, seed: int) -> None:
    """Re-initialise every parameter under ``module`` reproducibly without touching the global RNG."""
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for sub in module.modules():
            own = list(sub.parameters(recurse=False))
            if not own:
                continue
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
            else:
                for p in own:
                    std = float(p.detach().float().std()) if p.numel() > 1 else 1.0
                    p.copy_(torch.randn(p.shape, generator=generator).to(p) * (std or 1.0))


def parameter_randomization(
    explainer: Explainer,
    images: Tensor,
    target: Tensor,
    *,
    layers: list[str] | None = None,
    mode: Literal["cascading", "independent"] = "cascading",
    seed: int = 0,
) -> ParameterRandomizationResult:
    r"""Run the parameter-randomisation sanity check on a deep copy of ``explainer.model``.

    For each layer :math:`l` (top to bottom) the weights are re-initialised (its modules'
    ``reset_parameters``, seeded with ``seed + index`` inside ``torch.random.fork_rng``, so the
    global RNG is untouched and the run is reproducible) and

    .. math::
        \rho_l = \operatorname{Spearman}\big(S(x; \theta), S(x; \theta_{\tilde l})\big)

    is computed per image. ``cascading`` keeps earlier randomisations (θ with layers
    :math:`1..l` randomised); ``independent`` restores the layer before the next one. The
    original model is never modified.

    Args:
        explainer: any :class:`~lico_lightning.explain.Explainer`; it is rebound to the copy.
        images: ``(B, C, H, W)``.
        target: ``(B,)`` long.
        layers: dotted names to randomise in order; ``None`` → :func:`randomizable_layers`.
        mode: ``"cascading"`` or ``"independent"``.
        seed: base seed of the re-initialisation.

    Returns:
        :class:`ParameterRandomizationResult`.

    Example:
        >>> from lico_lightning.explain import GradCAM
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...     nn.Flatten(), nn.Linear(4, 3))
        >>> res = parameter_randomization(GradCAM(net, "1"), torch.randn(2, 3, 16, 16),
        ...     torch.tensor([0, 1]), mode="cascading", seed=0)
        >>> res.layers, tuple(res.correlation.shape)
        (['4', '0'], (2, 2))
    """
    if not isinstance(explainer, Explainer):
        raise TypeError(
            f"Expected `explainer` to be an Explainer, but got {type(explainer).__name__}."
        )
    check_choice("mode", mode, ["cascading", "independent"])
    model = explainer.model
    names = randomizable_layers(model) if layers is None else list(layers)
    if not names:
        raise ValueError(
            f"Expected layers with parameters to randomise, but got none in {type(model).__name__}."
        )
    for name in names:
        resolve_layer(model, name)

    original = explainer.attribute(images, target)
    twin = copy.deepcopy(model)
    twin_explainer = explainer.with_model(twin)
    maps, correlations = [], []
    for index, name in enumerate(names):
        module = twin.get_submodule(name)
        saved = copy.deepcopy(module.state_dict()) if mode == "independent" else None
        _randomize(module, seed + index)
        randomized = twin_explainer.attribute(images, target)
        maps.append(randomized)
        correlations.append(
            spearman_correlation(original.flatten(1), randomized.flatten(1), constant="zero")
        )
        if saved is not None:
            module.load_state_dict(saved)
    return ParameterRandomizationResult(
        mode=mode,
        layers=names,
        correlation=torch.stack(correlations),
        original=original,
        randomized=torch.stack(maps),
    )
