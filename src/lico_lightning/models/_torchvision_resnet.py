"""torchvision ResNets (ImageNet style) as feature-map backbones, with pretrained weights."""

from __future__ import annotations

from typing import Any

import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from lico_lightning._validation import check_choice, check_positive
from lico_lightning.models._base import Backbone, _conv_out, _pair

__all__ = ["ResNetBackbone", "resolve_torchvision_weights"]

_RESNET_ARCHS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)


def resolve_torchvision_weights(arch: str, weights: Any) -> Any:
    """Turn ``"IMAGENET1K_V1"`` / ``"DEFAULT"`` / ``"ResNet50_Weights.IMAGENET1K_V2"`` or an enum
    member into torchvision's weights enum member for ``arch`` (``None`` stays ``None``)."""
    if weights is None:
        return None
    enum_cls = torchvision.models.get_model_weights(arch)
    try:
        return enum_cls.verify(weights)
    except KeyError:
        available = ["DEFAULT", *(w.name for w in enum_cls)]
        raise ValueError(
            f"Expected `weights` for {arch} to be one of {available}, but got {weights!r}."
        ) from None


class ResNetBackbone(Backbone):
    """A torchvision ResNet whose feature map is the output of ``layer4``.

    The model is built by torchvision (``torchvision.models.get_model(arch, weights=...)``), so
    ``weights="IMAGENET1K_V1"`` (or ``"DEFAULT"``, or a full enum name) downloads and loads
    torchvision's ImageNet weights; parameter names equal torchvision's (``conv1``, ``layer4``,
    ``fc``, ...), so torchvision state dicts load directly. With ``num_classes != 1000`` and
    pretrained weights the ``fc`` layer is replaced by a freshly initialised one.

    The feature map is ``(B, C, H/32, W/32)``: ``C`` = 512 (ResNet-18/34) or 2048 (ResNet-50
    and deeper), 7×7 for 224×224 inputs (LICO's ``h_psi[512, 49]``).

    Args:
        arch: torchvision builder name (``resnet18``, ``resnet50``, ``resnext50_32x4d``, ...).
        num_classes: Number of logits.
        weights: torchvision weights name for ``arch``, or ``None`` for random initialisation.
        progress: Show a download progress bar.
        **kwargs: Passed to the torchvision builder (e.g. ``zero_init_residual=True``,
            ``replace_stride_with_dilation=[False, False, True]``).

    Example:
        >>> import torch
        >>> net = ResNetBackbone("resnet18", num_classes=5)
        >>> net.forward_features(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 512, 2, 2])
        >>> net.feature_shape(224), net.cam_layer
        ((512, 49), 'layer4')
    """

    def __init__(
        self,
        arch: str = "resnet50",
        num_classes: int = 1000,
        weights: str | None = None,
        progress: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_choice("arch", arch, _RESNET_ARCHS)
        check_positive("num_classes", num_classes)
        resolved = resolve_torchvision_weights(arch, weights)
        build_classes = 1000 if resolved is not None else num_classes
        net = torchvision.models.get_model(
            arch, weights=resolved, progress=progress, num_classes=build_classes, **kwargs
        )
        if build_classes != num_classes:
            net.fc = nn.Linear(net.fc.in_features, num_classes)
        self.arch = arch
        self.num_classes = num_classes
        self.feature_channels = net.fc.in_features
        self.cam_layer = "layer4"
        # Adopt torchvision's modules under their own names (state-dict compatible).
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.avgpool, self.fc = net.avgpool, net.fc

    def forward_features(self, x: Tensor) -> Tensor:
        """Return ``layer4``'s output ``(B, C, H/32, W/32)``."""
        self._check_images(x, self.conv1)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, features: Tensor) -> Tensor:
        """Global average pooling + ``fc``: ``(B, C, H, W)`` → ``(B, num_classes)``."""
        return self.fc(self.avgpool(features).flatten(1))

    def feature_spatial_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """Walk the strided layers (stem conv, max-pool, first block of each stage)."""
        size = list(_pair("image_size", image_size))
        ops: list[nn.Conv2d | nn.MaxPool2d] = [self.conv1, self.maxpool]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            block = layer[0]
            ops.append(block.conv2 if isinstance(block, Bottleneck) else block.conv1)
            if not isinstance(block, (BasicBlock, Bottleneck)):  # pragma: no cover - defensive
                raise TypeError(f"Unsupported ResNet block {type(block).__name__}.")
        for op in ops:
            if isinstance(op.padding, str):  # pragma: no cover - torchvision pads with ints
                raise TypeError(f"Expected a layer with integer padding, but got {op.padding!r}.")
            for axis in range(2):
                k, s, p, d = (
                    _as_tuple(op.kernel_size)[axis],
                    _as_tuple(op.stride)[axis],
                    _as_tuple(op.padding)[axis],
                    _as_tuple(getattr(op, "dilation", 1))[axis],
                )
                size[axis] = _conv_out(size[axis], k, s, p, d)
        return size[0], size[1]


def _as_tuple(v: int | tuple[int, ...]) -> tuple[int, ...]:
    return (v, v) if isinstance(v, int) else tuple(v)
