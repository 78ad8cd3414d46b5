"""The one small interface every saliency explainer implements, and the explainer registry.

``explainer.attribute(images, target) -> saliency`` with ``images (B, C, H, W)``,
``target (B,)`` long and ``saliency (B, H, W)`` at input resolution (min-max normalised to
``[0, 1]`` per image unless ``normalize=False``).

Every explainer is safe inside a training run: the model runs in eval mode and every module's
``training`` flag, parameter ``requires_grad`` and hooks are restored afterwards (also on
error); gradients are taken with ``torch.autograd.grad`` w.r.t. the hooked activation only
(parameter ``.grad`` untouched); it works under ``torch.inference_mode`` (Lightning
validation); randomness comes from the explainer's own seeded ``torch.Generator``.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from lico_lightning._registry import Registry
from lico_lightning._safety import detach_input, explanation_mode, preserve_model_state
from lico_lightning._validation import check_finite, check_target, check_tensor
from lico_lightning.explain._saliency.hooks import find_default_layer, resolve_layer
from lico_lightning.functional import normalize_saliency

__all__ = [
    "EXPLAINERS",
    "Explainer",
    "build_explainers",
    "check_explainer_options",
    "create_explainer",
    "list_explainers",
    "register_explainer",
]

E = TypeVar("E", bound="Explainer")


class Explainer(ABC):
    """Base class: ``attribute(images, target) -> (B, H, W)`` saliency for a classifier.

    Subclasses implement :meth:`_attribute`, which runs with the model in eval mode, outside
    inference mode, under ``torch.no_grad()``, on a non-inference copy of ``images``.

    Args:
        model: classifier ``(B, C, H, W) -> (B, num_classes)`` logits.
        layer: target layer (module or dotted name) for layer-based methods; ``None`` → the
            declared default of the model or of its first submodule that has one (attribute
            ``cam_layer``, as on every :mod:`lico_lightning.models` backbone; a LightningModule
            holding ``self.backbone`` gives ``"backbone.<cam_layer>"``), else the last module
            that outputs a ``(B, C, h, w)`` map with ``h·w > 1`` (found by one forward pass).
        reshape: maps the layer output to ``(B, N, h, w)`` (e.g. ``ViTReshape()``); ``None``
            with a declared default layer → that module's ``reshape_cam_activation`` if any.
        normalize: min-max normalise each map to ``[0, 1]``.
        progress: show a tqdm bar for long work (ScoreCAM, RISE).
    """

    #: Whether the method reads a layer (False for RISE).
    uses_layer: bool = True

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module | str | None = None,
        *,
        reshape: Callable[[Tensor], Tensor] | None = None,
        normalize: bool = True,
        progress: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected `model` to be an nn.Module, but got {type(model).__name__}.")
        if reshape is not None and not callable(reshape):
            raise TypeError(f"Expected `reshape` to be callable, but got {type(reshape).__name__}.")
        self.model = model
        self.reshape = reshape
        self.normalize = normalize
        self.progress = progress
        self.layer_name: str | None = None
        if self.uses_layer:
            if layer is None and (found := find_default_layer(model)) is not None:
                layer = found[0]
                if self.reshape is None:
                    self.reshape = found[1]
            if layer is not None:
                self.layer_name = resolve_layer(model, layer)[1]

    @property
    def layer(self) -> nn.Module | None:
        """The hooked module (``None`` until resolved, or for layer-free methods)."""
        return None if self.layer_name is None else self.model.get_submodule(self.layer_name)

    def _hooked_layer(self) -> tuple[nn.Module, str]:
        """The hooked ``(module, name)``, once resolved (:meth:`attribute` resolves it)."""
        if self.layer_name is None:
            raise RuntimeError("Expected the layer to be resolved by `attribute`, but got None.")
        return self.model.get_submodule(self.layer_name), self.layer_name

    def with_model(self: E, model: nn.Module) -> E:
        """A shallow copy of this explainer bound to another model with the same layer names
        (e.g. a randomised deep copy for sanity checks)."""
        other = copy.copy(self)
        other.model = model
        if self.layer_name is not None:
            resolve_layer(model, self.layer_name)
        return other

    def attribute(self, images: Tensor, target: Tensor) -> Tensor:
        """Saliency maps for ``target`` classes.

        Args:
            images: ``(B, C, H, W)`` float, normalised like the training data.
            target: ``(B,)`` long class indices.

        Returns:
            ``(B, H, W)`` float saliency, detached (a normal tensor even under inference mode).

        Raises:
            TypeError: ``images`` is not a floating tensor or ``target`` not a long tensor.
            ValueError: wrong shapes, targets out of range, or NaN/Inf in ``images`` (a NaN
                image would otherwise give an all-zero map: rejected before any work).
        """
        check_tensor("images", images, 4, floating=True)
        check_finite("images", images)
        num_classes = getattr(self.model, "num_classes", None)
        check_target(target, images.shape[0], num_classes if isinstance(num_classes, int) else None)
        with explanation_mode(), preserve_model_state(self.model):
            x = detach_input(images)
            t = target.detach().to(x.device).clone()
            if self.uses_layer and self.layer_name is None:
                self.layer_name = _infer_feature_layer(self.model, x[:1])
            saliency = self._attribute(x, t).detach().float()
            if self.normalize:
                saliency = normalize_saliency(saliency)
        return saliency

    @abstractmethod
    def _attribute(self, images: Tensor, target: Tensor) -> Tensor:
        """``(B, C, H, W), (B,) -> (B, H, W)``; the model is already in eval mode."""

    def __repr__(self) -> str:
        layer = f"layer={self.layer_name!r}, " if self.uses_layer else ""
        return f"{type(self).__name__}({layer}model={type(self.model).__name__})"


def _infer_feature_layer(model: nn.Module, example: Tensor) -> str:
    """Name of the last module (in forward-completion order) that outputs a spatial map."""
    seen: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod: nn.Module, inp: object, out: object, _name: str = name) -> None:
            if isinstance(out, Tensor) and out.ndim == 4 and out.shape[-1] * out.shape[-2] > 1:
                seen.append(_name)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError(
            f"Expected {type(model).__name__} to have a layer with a (B, C, H, W) output to explain, "
            "but got none; pass `layer=` (and `reshape=ViTReshape(...)` for transformers)."
        )
    return seen[-1]


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
EXPLAINERS: Registry[type[Explainer]] = Registry("explainer", base=Explainer)


def register_explainer(name: str, *, overwrite: bool = False) -> Callable[[type[E]], type[E]]:
    """Class decorator adding an :class:`Explainer` subclass to the registry under ``name``.

    Raises:
        TypeError: the decorated object is not an :class:`Explainer` subclass.
        ValueError: ``name`` is registered already and ``overwrite`` is False.

    Example:
        >>> @register_explainer("my_method")
        ... class MyMethod(Explainer):
        ...     uses_layer = False
        ...     def _attribute(self, images, target):
        ...         return images.abs().sum(1)
        >>> "my_method" in list_explainers()
        True
        >>> EXPLAINERS.unregister("my_method")
    """

    def decorator(cls: type[E]) -> type[E]:
        EXPLAINERS.register(name, cls, overwrite=overwrite)
        return cls

    return decorator


def list_explainers() -> list[str]:
    """Names accepted by :func:`create_explainer` (and the ``SaliencyMonitor``'s ``methods``)."""
    return EXPLAINERS.names()


def create_explainer(name: str, model: nn.Module, **kwargs: Any) -> Explainer:
    """Build a registered explainer by name.

    Raises:
        ValueError: unknown ``name`` or an option the explainer does not have (the message
            lists the names / options that exist).

    Example:
        >>> import torchvision
        >>> from lico_lightning.explain import create_explainer  # registers the built-in ones
        >>> net = torchvision.models.resnet18(num_classes=3)
        >>> create_explainer("gradcam", net, layer="layer4")
        GradCAM(layer='layer4', model=ResNet)
        >>> create_explainer("nope", net)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected an explainer name, but got 'nope'. Available: gradcam, gradcampp, ...
        >>> create_explainer("rise", net, num_maskz=5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected options of the 'rise' explainer among [...], but got 'num_maskz'.
    """
    check_explainer_options([name], {name: kwargs})
    return EXPLAINERS.get(name)(model, **kwargs)


def check_explainer_options(
    methods: Sequence[str], explainer_kwargs: Mapping[str, Mapping[str, Any]] | None = None
) -> None:
    """Check explainer names and their keyword options without building anything.

    For configuration time (a callback's ``__init__``, the CLI): the same errors
    :func:`create_explainer` raises, before any model exists. Entries of ``explainer_kwargs``
    for methods not in ``methods`` are ignored.

    Raises:
        ValueError: an unknown method name, or an option a method does not have (the message
            lists the names / options that exist).

    Example:
        >>> from lico_lightning.explain._saliency.base import check_explainer_options
        >>> check_explainer_options(["gradcam", "rise"], {"rise": {"num_masks": 8}})
        >>> check_explainer_options(["rise"], {"rise": {"num_maskz": 5}})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected options of the 'rise' explainer among [..., 'num_masks', ...], but got 'num_maskz'.
    """
    for name in methods:
        EXPLAINERS.check_options(name, (explainer_kwargs or {}).get(name, {}))


def build_explainers(
    model: nn.Module,
    methods: Sequence[str],
    layer: str | nn.Module | None = None,
    explainer_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Explainer]:
    """One explainer per method name, sharing a default target ``layer``.

    ``layer`` goes to every explainer that reads a layer (``uses_layer``, e.g. the CAMs) and
    is left out for those that do not (e.g. RISE); ``explainer_kwargs[name]`` overrides it
    and adds per-method options; a misspelt option is rejected by :func:`create_explainer`
    with the list of the options that exist. Entries for methods not in ``methods`` are ignored.

    Example:
        >>> import torchvision
        >>> from lico_lightning.explain import build_explainers
        >>> net = torchvision.models.resnet18(num_classes=3)
        >>> build_explainers(net, ["gradcam", "rise"], layer="layer3", explainer_kwargs={"rise": {"num_masks": 8}})
        {'gradcam': GradCAM(layer='layer3', model=ResNet), 'rise': RISE(model=ResNet)}
    """
    kwargs = explainer_kwargs or {}
    explainers = {}
    for name in methods:
        extra = dict(kwargs.get(name, {}))
        if layer is not None and name in EXPLAINERS and EXPLAINERS.get(name).uses_layer:
            extra.setdefault("layer", layer)
        explainers[name] = create_explainer(name, model, **extra)
    return explainers
