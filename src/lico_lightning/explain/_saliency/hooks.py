"""Hook utilities for explainers: resolve a target layer, read its output as a feature map,
and leave the model exactly as it was found.

* :func:`resolve_layer` — a module or a dotted name (``"layer4"``, ``"blocks.11.norm1"``) →
  ``(module, name)``.
* :class:`ViTReshape` — token outputs ``(B, T, D)`` → feature map ``(B, D, h, w)``.
* :class:`LayerCapture` — a forward hook that records the layer output; in gradient mode it
  makes the output a fresh leaf so that ``torch.autograd.grad`` reaches *only* that tensor.

The model-safety contexts (``preserve_model_state``, ``explanation_mode``, ...) live in
:mod:`lico_lightning._safety`, shared by every layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "LayerCapture",
    "ViTReshape",
    "find_default_layer",
    "layer_name",
    "resolve_layer",
]

#: Attributes a model may define to name its default Grad-CAM layer (first found wins).
DEFAULT_LAYER_ATTRIBUTES = (
    "default_cam_layer",
    "gradcam_layer",
    "cam_layer",
    "default_target_layer",
)


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> tuple[nn.Module, str]:
    """Return ``(module, dotted_name)`` for a module of ``model`` given as a module or a name.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> resolve_layer(net, "0")[1], resolve_layer(net, net[1])[1]
        ('0', '1')
    """
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer), layer
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n]
            shown = ", ".join(names[-12:])
            raise ValueError(
                f"Expected `layer` to name a submodule of {type(model).__name__}, but got {layer!r}. "
                f"Available (last {min(12, len(names))} of {len(names)}): {shown}."
            ) from None
    if isinstance(layer, nn.Module):
        name = layer_name(model, layer)
        if name is None:
            raise ValueError(
                f"Expected `layer` to be a submodule of {type(model).__name__}, but got a "
                f"{type(layer).__name__} that is not part of it."
            )
        return layer, name
    raise TypeError(
        f"Expected `layer` to be an nn.Module or a dotted name, but got {type(layer).__name__}."
    )


def layer_name(model: nn.Module, layer: nn.Module) -> str | None:
    """Dotted name of ``layer`` inside ``model`` (``""`` for the model itself), or ``None``."""
    for name, module in model.named_modules():
        if module is layer:
            return name
    return None


def find_default_layer(model: nn.Module) -> tuple[str, Callable[[Tensor], Tensor] | None] | None:
    """The declared default CAM layer of ``model`` or of its first submodule that declares one.

    A module declares it with a string attribute from :data:`DEFAULT_LAYER_ATTRIBUTES` (the
    backbones of :mod:`lico_lightning.models` use ``cam_layer``), and optionally a
    ``reshape_cam_activation`` method for token outputs. A wrapper such as a LightningModule
    holding ``self.backbone`` resolves to ``"backbone.<cam_layer>"``.

    Returns:
        ``(dotted_name, reshape_or_None)``, or ``None`` if nothing is declared.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3))
        >>> net[0].cam_layer = ""  # empty: ignored
        >>> find_default_layer(net) is None
        True
        >>> wrapper = nn.Module(); wrapper.backbone = nn.Sequential(nn.Conv2d(1, 2, 3))
        >>> wrapper.backbone.cam_layer = "0"
        >>> find_default_layer(wrapper)
        ('backbone.0', None)
    """
    for name, module in model.named_modules():
        for attr in DEFAULT_LAYER_ATTRIBUTES:
            value = getattr(module, attr, None)
            if isinstance(value, str) and value:
                reshape = getattr(module, "reshape_cam_activation", None)
                return (f"{name}.{value}" if name else value), (
                    reshape if callable(reshape) else None
                )
    return None


class ViTReshape:
    r"""Read transformer tokens as a feature map: ``(B, T, D)`` → ``(B, D, h, w)``.

    The first ``num_prefix_tokens`` tokens (class / register / distillation tokens) are dropped
    and the remaining ``P = h·w`` patch tokens laid out row-major on the grid.

    Args:
        num_prefix_tokens: leading non-patch tokens to drop (ViT: 1 class token).
        grid_size: ``(h, w)``; ``None`` → square grid :math:`h = w = \sqrt{P}`.
        tokens_first: ``True`` for ``(B, T, D)`` (timm, open_clip batch-first), ``False`` for
            ``(B, D, T)`` (this package's ``forward_features`` for ViTs).

    Example:
        >>> ViTReshape(num_prefix_tokens=1)(torch.zeros(2, 1 + 16, 8)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(
        self,
        num_prefix_tokens: int = 1,
        grid_size: tuple[int, int] | None = None,
        tokens_first: bool = True,
    ) -> None:
        if num_prefix_tokens < 0:
            raise ValueError(f"Expected `num_prefix_tokens` >= 0, but got {num_prefix_tokens}.")
        self.num_prefix_tokens = num_prefix_tokens
        self.grid_size = tuple(grid_size) if grid_size is not None else None
        self.tokens_first = tokens_first

    def __call__(self, tokens: Tensor) -> Tensor:
        if tokens.ndim != 3:
            raise ValueError(
                f"Expected transformer tokens of shape (B, T, D), but got {tuple(tokens.shape)}."
            )
        if not self.tokens_first:
            tokens = tokens.transpose(1, 2)
        patches = tokens[:, self.num_prefix_tokens :]
        p = patches.shape[1]
        if self.grid_size is None:
            side = math.isqrt(p)
            if side * side != p:
                raise ValueError(
                    f"Expected a square number of patch tokens after dropping {self.num_prefix_tokens} "
                    f"prefix token(s), but got {p}; pass `grid_size=(h, w)` or fix `num_prefix_tokens`."
                )
            h = w = side
        else:
            h, w = self.grid_size
            if h * w != p:
                raise ValueError(
                    f"Expected h·w = {p} patch tokens for `grid_size`, but got {(h, w)}."
                )
        return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, w)

    def __repr__(self) -> str:
        return (
            f"ViTReshape(num_prefix_tokens={self.num_prefix_tokens}, grid_size={self.grid_size}, "
            f"tokens_first={self.tokens_first})"
        )


class LayerCapture:
    """Forward hook on one layer that records its output (the last call's, if called twice).

    With ``gradient=True`` the output is replaced by a copy of a fresh leaf tensor
    (:attr:`leaf`) that requires grad, and grad mode is switched on from that point of the
    forward pass: the model can run under ``torch.no_grad()`` up to the layer (no graph is
    built for the layers before it) and ``torch.autograd.grad(score, capture.leaf)`` reaches
    only the hooked activation — parameter ``.grad`` fields are never written.

    Use as a context manager; the hook is removed on exit, also on error.

    Args:
        layer: the module to hook.
        name: its dotted name (for error messages).
        reshape: maps the raw output to ``(B, N, h, w)`` (e.g. :class:`ViTReshape`).
        gradient: make the output a grad-requiring leaf.
    """

    def __init__(
        self,
        layer: nn.Module,
        name: str,
        reshape: Callable[[Tensor], Tensor] | None = None,
        *,
        gradient: bool = False,
    ) -> None:
        self.layer = layer
        self.name = name
        self.reshape = reshape
        self.gradient = gradient
        self.leaf: Tensor | None = None
        self.output: Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def feature_map(self, tensor: Tensor) -> Tensor:
        """Apply the reshape and check that the result is a ``(B, N, h, w)`` feature map."""
        out = self.reshape(tensor) if self.reshape is not None else tensor
        if out.ndim != 4:
            hint = (
                ""
                if self.reshape is not None
                else " Pass `reshape=ViTReshape(...)` for token outputs."
            )
            raise ValueError(
                f"Expected the output of layer {self.name!r} to be a feature map (B, C, H, W), "
                f"but got shape {tuple(out.shape)}.{hint}"
            )
        return out

    def _hook(self, module: nn.Module, inputs: object, output: object) -> Tensor | None:
        if not isinstance(output, Tensor):
            raise TypeError(
                f"Expected the output of layer {self.name!r} to be a torch.Tensor, but got "
                f"{type(output).__name__}; hook a layer that returns a tensor."
            )
        self.feature_map(output.detach())  # fail early, before the rest of the forward pass
        if not self.gradient:
            self.output = output.detach()
            return None
        leaf = output.detach().requires_grad_(True)
        self.leaf = leaf
        torch.set_grad_enabled(True)  # restored by the caller's grad-mode context on exit
        return leaf.clone()  # a non-leaf copy, so in-place ops downstream are allowed

    def __enter__(self) -> LayerCapture:
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
