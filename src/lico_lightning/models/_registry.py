"""Backbone registry: names → configured constructors (configs as data, open_clip style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lico_lightning._registry import Registry
from lico_lightning._validation import check_positive
from lico_lightning.models._base import Backbone
from lico_lightning.models._preact_resnet import PreActResNet
from lico_lightning.models._torchvision_resnet import ResNetBackbone, resolve_torchvision_weights
from lico_lightning.models._vit import ViTBackbone
from lico_lightning.models._wide_resnet import WideResNet

__all__ = ["BACKBONES", "create_backbone", "list_backbones", "register_backbone"]

BackboneFactory = Callable[..., Backbone]

_VIT_B_16 = {
    "image_size": 224,
    "patch_size": 16,
    "num_layers": 12,
    "num_heads": 12,
    "hidden_dim": 768,
    "mlp_dim": 3072,
}
# CPU-sized ViT for 32×32 inputs: 4×4 patches → 8×8 grid, T = 65 tokens.
_VIT_TINY = {
    "image_size": 32,
    "patch_size": 4,
    "num_layers": 4,
    "num_heads": 3,
    "hidden_dim": 192,
    "mlp_dim": 768,
}


def _vit_b_16(num_classes: int, weights: str | None = None, **kwargs: Any) -> Backbone:
    resolved = resolve_torchvision_weights("vit_b_16", weights)
    config = {**_VIT_B_16, **kwargs}
    if resolved is not None and "image_size" not in kwargs:
        config["image_size"] = int(resolved.meta["min_size"][0])
    full_name = None if resolved is None else f"{type(resolved).__name__}.{resolved.name}"
    return ViTBackbone(num_classes=num_classes, weights=full_name, **config)


def _with(cls: Callable[..., Backbone], **defaults: Any) -> BackboneFactory:
    def factory(num_classes: int, **kwargs: Any) -> Backbone:
        return cls(num_classes=num_classes, **{**defaults, **kwargs})

    factory.__doc__ = f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in defaults.items())})"
    return factory


#: Backbone factories by name (:func:`register_backbone` adds one).
BACKBONES: Registry[BackboneFactory] = Registry("backbone")
BACKBONES.register("resnet18", _with(ResNetBackbone, arch="resnet18"))
BACKBONES.register("resnet50", _with(ResNetBackbone, arch="resnet50"))
BACKBONES.register("wrn28_2", _with(WideResNet, depth=28, widen_factor=2))
BACKBONES.register("wrn28_8", _with(WideResNet, depth=28, widen_factor=8))
BACKBONES.register("wrn28_10", _with(WideResNet, depth=28, widen_factor=10))
BACKBONES.register("preact_resnet18", _with(PreActResNet, blocks=(2, 2, 2, 2)))
BACKBONES.register("vit_b_16", _vit_b_16)
BACKBONES.register("vit_tiny", _with(ViTBackbone, **_VIT_TINY))


def register_backbone(name: str, factory: BackboneFactory, *, overwrite: bool = False) -> None:
    """Add ``factory(num_classes, **kwargs) -> Backbone`` to the registry under ``name``."""
    BACKBONES.register(name, factory, overwrite=overwrite)


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone`, sorted.

    Example:
        >>> "wrn28_2" in list_backbones()
        True
    """
    return BACKBONES.names()


def create_backbone(name: str, num_classes: int, **kwargs: Any) -> Backbone:
    """Build a registered backbone.

    Args:
        name: One of :func:`list_backbones`.
        num_classes: Number of logits.
        **kwargs: Override the registered configuration or pass constructor options, e.g.
            ``weights="IMAGENET1K_V1"`` (ResNets, ``vit_b_16``), ``bn_momentum=0.1`` (WRN),
            ``image_size=32`` (ViTs).

    Returns:
        A :class:`Backbone`.

    Example:
        >>> net = create_backbone("wrn28_2", num_classes=10)
        >>> net.feature_shape(32)
        (128, 64)
        >>> create_backbone("wrn99", num_classes=10)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected a backbone name, but got 'wrn99'. Available: preact_resnet18, ...
    """
    if not isinstance(name, str):
        raise TypeError(f"Expected `name` to be a str, but got {type(name).__name__}.")
    factory = BACKBONES.get(name)
    check_positive("num_classes", num_classes)
    return factory(num_classes=num_classes, **kwargs)
