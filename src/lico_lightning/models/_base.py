"""The interface every image backbone implements (a plain classifier with a feature-map split)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from torch import Tensor, nn

from lico_lightning._validation import check_tensor

__all__ = ["Backbone"]


def _pair(name: str, image_size: int | tuple[int, int]) -> tuple[int, int]:
    """Return ``(H, W)`` from an int or a pair, checking both are positive ints."""
    if isinstance(image_size, bool):
        raise TypeError(f"Expected `{name}` to be an int or (H, W) pair, but got bool.")
    if isinstance(image_size, int):
        size = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        size = (image_size[0], image_size[1])
    else:
        raise TypeError(f"Expected `{name}` to be an int or (H, W) pair, but got {image_size!r}.")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"Expected `{name}` to hold positive ints, but got {image_size!r}.")
    return size


def _conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output length of a convolution / pooling window along one axis (PyTorch's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class Backbone(nn.Module, ABC):
    """A plain image classifier split into a feature extractor and a head.

    ``forward(x) == forward_head(forward_features(x))``. ``forward_features`` returns the last
    feature map before pooling, ``(B, C, *spatial)``: ``(B, C, H, W)`` for CNNs, ``(B, D, T)``
    for vision transformers (``T`` tokens, prefix tokens first). LICO flattens the spatial part
    to ``(B, C, L)``; :meth:`feature_shape` gives ``(C, L)`` for an input size without running the
    model, so a mapping net can be sized at construction.

    Attributes:
        num_classes: Number of logits.
        feature_channels: ``C`` of :meth:`forward_features` (``D`` for a ViT).
        cam_layer: Dotted name (for :meth:`torch.nn.Module.get_submodule`) of the default
            Grad-CAM target layer. :meth:`reshape_cam_activation` turns that layer's output
            into ``(B, C, h, w)``.
    """

    num_classes: int
    feature_channels: int
    cam_layer: str

    def _check_images(self, x: Tensor, stem: nn.Conv2d) -> Tensor:
        """Images ``(B, C, H, W)`` float with the stem convolution's ``C`` (an early, clear
        error instead of the convolution's "expected input ... to have 3 channels")."""
        check_tensor("x", x, ndim=4, floating=True)
        want = int(stem.in_channels)
        if x.shape[1] != want:
            raise ValueError(
                f"Expected images with {want} channels ({type(self).__name__} takes "
                f"in_channels={want}), but got {x.shape[1]} in shape {tuple(x.shape)}; give the "
                f"data module `channels: {want}` (e.g. DigitsDataModule(channels={want})) or build "
                f"the backbone for these images with `backbone_kwargs: {{in_channels: {x.shape[1]}}}` "
                "(WRN / PreAct-ResNet)."
            )
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Return logits ``(B, num_classes)`` for images ``x`` ``(B, 3, H, W)``."""
        return self.forward_head(self.forward_features(x))

    @abstractmethod
    def forward_features(self, x: Tensor) -> Tensor:
        """Return the last feature map ``(B, C, *spatial)`` for images ``(B, 3, H, W)``."""

    @abstractmethod
    def forward_head(self, features: Tensor) -> Tensor:
        """Return logits ``(B, num_classes)`` from the output of :meth:`forward_features`."""

    @abstractmethod
    def feature_spatial_shape(self, image_size: int | tuple[int, int]) -> tuple[int, ...]:
        """Return the spatial shape of :meth:`forward_features` for an input of ``image_size``."""

    def feature_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """Return ``(C, L)``: channels and flattened spatial size of the feature map.

        Computed from the architecture (no forward pass). ``L`` is the output size of LICO's
        mapping net ``h_psi`` (64 for WRN on 32×32, 49 for ResNet-50 on 224×224).
        """
        return self.feature_channels, math.prod(self.feature_spatial_shape(image_size))

    @property
    def cam_module(self) -> nn.Module:
        """The module named by :attr:`cam_layer`."""
        return self.get_submodule(self.cam_layer)

    def reshape_cam_activation(self, activation: Tensor) -> Tensor:
        """Turn the output of :attr:`cam_module` into a map ``(B, C, h, w)``.

        CNNs return the activation unchanged; vision transformers drop the prefix tokens and
        fold the patch tokens back onto the patch grid.
        """
        return check_tensor("activation", activation, ndim=4)


class _SmallImageCNN(Backbone):
    """A CNN for small images whose feature map is reached by ``num_downsamples`` stride-2
    3×3 convolutions (padding 1) and classified by global average pooling + ``fc``
    (:class:`WideResNet`: 2, :class:`PreActResNet`: 3)."""

    num_downsamples: int
    fc: nn.Linear

    def forward_head(self, features: Tensor) -> Tensor:
        """Global average pooling + linear head: ``(B, C, H, W)`` → ``(B, num_classes)``."""
        return self.fc(features.mean(dim=(2, 3)))

    def feature_spatial_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """``(ceil(H/2^n), ceil(W/2^n))``: ``n = num_downsamples`` stride-2 3×3 convolutions
        with padding 1."""
        h, w = _pair("image_size", image_size)
        for _ in range(self.num_downsamples):
            h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
        return h, w
