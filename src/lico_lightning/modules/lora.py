r"""LoRA adapters on the attention and MLP projections of a model.

Each adapted weight :math:`W` (``(D_out, D_in)``) acts as :math:`W + \tfrac{\alpha}{r} B A`
with :math:`A \in \mathbb{R}^{r \times D_{in}}` (Kaiming-uniform, as in LoRA) and
:math:`B \in \mathbb{R}^{D_{out} \times r}` (zeros: the adapted layer equals the base layer at
init). Two placements, one maths:

* inside ``nn.MultiheadAttention`` (its fused ``in_proj_weight`` and ``out_proj.weight``, which
  ``F.multi_head_attention_forward`` reads as attributes, and which explainers read to recompute
  attention) the adapter is a *weight parametrization* (``torch.nn.utils.parametrize``): the
  attribute itself reads :math:`W + \tfrac{\alpha}{r} BA`, so the module keeps its own forward
  and every reader sees the adapted weight;
* on any other ``nn.Linear`` (the MLP's ``c_fc`` / ``c_proj``) the adapter is a child module
  ``lora`` and a forward hook adds :math:`\tfrac{\alpha}{r}\, x A^\top B^\top` to the output:
  the full-size :math:`W + BA` is never formed, so neither its memory nor the full-size weight
  gradient is paid for (the MLP holds two thirds of a transformer block's weights).

``peft`` wraps ``nn.MultiheadAttention`` in a module whose ``in_proj_weight`` attribute is the
*base* weight outside its forward, which readers of attention weights would silently get wrong.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from lico_lightning._validation import check_int, check_real

__all__ = [
    "LORA_TARGETS",
    "LoRALinear",
    "LoRAParametrization",
    "apply_lora",
    "lora_candidates",
    "lora_state_dict",
    "merged_state_dict",
]

#: default targets: the fused q/k/v projection, the attention output and the two MLP layers
LORA_TARGETS = ("attn", "attn.out_proj", "mlp.c_fc", "mlp.c_proj")


class LoRAParametrization(nn.Module):
    """:math:`W \\mapsto W + \\tfrac{\\alpha}{r} B\\,A` for a ``(D_out, D_in)`` weight.

    ``dropout`` drops input columns of :math:`A` in training (one mask per forward, scaled by
    :math:`1/(1-p)`), i.e. dropout on the adapter's input shared across the batch: the base path
    is never dropped.

    Args:
        shape: ``(D_out, D_in)`` of the adapted weight.
        rank: r.
        alpha: the scale numerator (:math:`\\alpha / r` multiplies :math:`BA`).
        dropout: probability of dropping an input column of :math:`A` in training.

    Example:
        >>> lora = LoRAParametrization((3, 4), rank=2, alpha=4.0)
        >>> w = torch.randn(3, 4)
        >>> torch.equal(lora(w), w)  # B = 0 at init
        True
    """

    def __init__(self, shape: Sequence[int], rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        out_features, in_features = int(shape[0]), int(shape[1])
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = alpha / rank
        self.dropout = dropout

    def delta(self) -> Tensor:
        """:math:`\\tfrac{\\alpha}{r} B A` ``(D_out, D_in)`` (with the training dropout)."""
        a: Tensor = self.lora_A
        if self.training and self.dropout > 0.0:
            keep = torch.rand(a.shape[1], device=a.device) >= self.dropout
            a = a * keep.to(a.dtype) / (1.0 - self.dropout)
        return self.scale * (self.lora_B @ a)

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.delta().to(weight.dtype)


class LoRALinear(nn.Module):
    r"""The adapter of an ``nn.Linear`` (a child ``lora`` of it; a forward hook adds its output):
    :math:`x \mapsto \tfrac{\alpha}{r}\, \operatorname{dropout}(x) A^\top B^\top`.

    Args:
        in_features: D_in.
        out_features: D_out.
        rank: r.
        alpha: the scale numerator.
        dropout: dropout on the adapter's input (the base path is never dropped).

    Example:
        >>> lora = LoRALinear(4, 3, rank=2, alpha=4.0)
        >>> lora(torch.randn(5, 4)).abs().max().item()  # B = 0 at init
        0.0
    """

    def __init__(
        self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)

    def delta(self) -> Tensor:
        """:math:`\\tfrac{\\alpha}{r} B A` ``(D_out, D_in)``."""
        return self.scale * (self.lora_B @ self.lora_A)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., D_in)`` → ``(..., D_out)``."""
        a, b = self.lora_A.to(x.dtype), self.lora_B.to(x.dtype)
        if self.dropout.p > 0.0:  # p = 0 would still copy x and draw a mask in training
            x = self.dropout(x)
        return self.scale * ((x @ a.T) @ b.T)


def _add_lora_output(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor:
    lora: Any = module.lora
    return output + lora(inputs[0])


def _adaptable(module: nn.Module) -> list[str]:
    """The weight names of ``module`` LoRA can adapt (``[]``: none)."""
    if isinstance(module, nn.MultiheadAttention):
        return ["in_proj_weight"] if module.in_proj_weight is not None else []
    if isinstance(module, nn.Linear):
        return ["weight"]
    return []


def lora_candidates(model: nn.Module, prefixes: Sequence[str] = ("",)) -> list[str]:
    """Names of the modules under ``prefixes`` that LoRA can adapt (``nn.Linear`` and
    ``nn.MultiheadAttention`` with a fused ``in_proj_weight``)."""
    return [
        name
        for name, module in model.named_modules()
        if name and name.startswith(tuple(prefixes)) and _adaptable(module)
    ]


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, f"*.{pattern}")


def apply_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Sequence[str] = LORA_TARGETS,
    prefixes: Sequence[str] = ("",),
) -> list[str]:
    """Freeze ``model`` and put a LoRA adapter on every target weight.

    A module is a target when it lies under one of ``prefixes`` (e.g. ``"visual."``) and its
    name matches a pattern of ``targets`` (``fnmatch``, whole name or a dotted suffix:
    ``"mlp.c_fc"`` matches ``visual.transformer.resblocks.0.mlp.c_fc``). A matched
    ``nn.MultiheadAttention`` gets the adapter on its fused ``in_proj_weight`` (q, k, v at
    once) and its ``out_proj`` get a :class:`LoRAParametrization`; any other ``nn.Linear`` a
    :class:`LoRALinear` child ``lora`` added by a forward hook. Only the adapters are left
    trainable.

    Args:
        model: the model to adapt, in place.
        rank: r ≥ 1.
        alpha: the scale numerator (> 0).
        dropout: adapter input dropout in [0, 1).
        targets: module-name patterns.
        prefixes: module-name prefixes the targets must lie under (the towers).

    Returns:
        the adapted weights' names (``"<module>.<weight>"``).

    Raises:
        ValueError: a pattern that matches no adaptable module (the candidates are listed).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> apply_lora(net, rank=2, targets=["0"])
        ['0.weight']
        >>> sorted(n for n, p in net.named_parameters() if p.requires_grad)
        ['0.lora.lora_A', '0.lora.lora_B']
        >>> attn = nn.Sequential(nn.MultiheadAttention(4, 2))
        >>> apply_lora(attn, rank=2, targets=["0", "0.out_proj"])  # weights read as attributes
        ['0.in_proj_weight', '0.out_proj.weight']
        >>> sorted(n for n, p in attn.named_parameters() if p.requires_grad)[:2]
        ['0.out_proj.parametrizations.weight.0.lora_A', '0.out_proj.parametrizations.weight.0.lora_B']
    """
    check_int("rank", rank, 1)
    check_real("alpha", alpha, low=0.0)
    check_real("dropout", dropout, low=0.0, strict=False)
    if dropout >= 1.0:
        raise ValueError(f"Expected `dropout` in [0, 1), but got {dropout!r}.")
    if isinstance(targets, str) or not targets:
        raise ValueError(
            f"Expected `targets` to be a non-empty sequence of module-name patterns, but got "
            f"{targets!r}."
        )
    candidates = lora_candidates(model, prefixes)
    for pattern in targets:
        if not any(_matches(name, pattern) for name in candidates):
            shown = sorted({n.split(".")[-1] for n in candidates})
            raise ValueError(
                f"Expected every LoRA target to match a Linear or MultiheadAttention module "
                f"under {list(prefixes)}, but got {pattern!r}, which matches none. Candidates "
                f"(name endings): {shown}; e.g. {candidates[:4]}."
            )
    model.requires_grad_(False)
    modules = dict(model.named_modules())
    inside_attention = {
        f"{name}.out_proj" if name else "out_proj"
        for name, module in modules.items()
        if isinstance(module, nn.MultiheadAttention)
    }
    adapted = []
    for name in candidates:
        if not any(_matches(name, p) for p in targets):
            continue
        module = modules[name]
        for weight_name in _adaptable(module):
            weight = getattr(module, weight_name)
            if isinstance(module, nn.Linear) and name not in inside_attention:
                adapter = LoRALinear(weight.shape[1], weight.shape[0], rank, alpha, dropout)
                module.add_module("lora", adapter.to(device=weight.device, dtype=weight.dtype))
                module.register_forward_hook(_add_lora_output)
            else:  # read as an attribute by its MultiheadAttention: parametrize the weight
                lora = LoRAParametrization(tuple(weight.shape), rank, alpha, dropout)
                lora.to(device=weight.device, dtype=weight.dtype)
                parametrize.register_parametrization(module, weight_name, lora, unsafe=True)
            adapted.append(f"{name}.{weight_name}")
    return adapted


def lora_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """The adapter entries (``lora_A`` / ``lora_B``) of a state dict."""
    return {k: v for k, v in state.items() if k.endswith((".lora_A", ".lora_B"))}


def merged_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The plain state dict of an adapted model: every adapted weight replaced by
    :math:`W + \\tfrac{\\alpha}{r} BA` (no dropout) under its original name, no adapter keys, on
    the CPU; the model is left as it is."""
    merged: dict[str, Tensor] = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            adapter = getattr(module, "lora", None)
            if isinstance(module, nn.Linear) and isinstance(adapter, LoRALinear):
                key = f"{name}.weight" if name else "weight"
                merged[key] = module.weight + adapter.delta().to(module.weight.dtype)
            if not parametrize.is_parametrized(module):
                continue
            parametrizations: Any = module.parametrizations
            for weight_name, chain in parametrizations.items():
                value = chain.original
                for step in chain:
                    training = step.training
                    value = step.eval()(value)
                    step.train(training)
                merged[f"{name}.{weight_name}" if name else weight_name] = value
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith((".lora_A", ".lora_B")) and ".parametrizations." not in key:
            continue  # a Linear's adapter
        head, sep, tail = key.partition("parametrizations.")
        if sep and (not head or head.endswith(".")):
            weight_name, _, rest = tail.partition(".")
            if rest == "original":
                out[head + weight_name] = merged[head + weight_name]
            continue  # the adapters
        out[key] = merged.get(key, value)
    return {k: v.detach().cpu().clone() for k, v in out.items()}
