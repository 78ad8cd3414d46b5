"""Vision transformer backbone (torchvision's ``VisionTransformer``) with token feature maps."""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.vision_transformer import VisionTransformer

from lico_lightning._validation import check_positive, check_tensor
from lico_lightning.models._base import Backbone, _pair

__all__ = ["ViTBackbone"]


def _resolve_full_weights(weights: Any) -> Any:
    if weights is None or not isinstance(weights, str):
        return weights
    try:
        return torchvision.models.get_weight(weights)
    except (ValueError, KeyError):
        raise ValueError(
            "Expected `weights` to be a full torchvision weights name such as "
            f"'ViT_B_16_Weights.IMAGENET1K_V1', but got {weights!r} (the registry's 'vit_b_16' "
            "also accepts the short tag 'IMAGENET1K_V1')."
        ) from None


class ViTBackbone(Backbone):
    """Vision transformer whose "feature map" is the sequence of output tokens.

    Built from torchvision's :class:`~torchvision.models.vision_transformer.VisionTransformer`
    (same parameter names: ``conv_proj``, ``class_token``, ``encoder``, ``heads``).

    **Feature layout.** :meth:`forward_features` returns the encoder output after its final
    LayerNorm as ``(B, D, T)``: channels = embedding width ``D``, ``T = 1 + P`` tokens, the
    class token first, then the ``P = (H/p)·(W/p)`` patch tokens in row-major patch order.
    LICO's losses use all ``T`` tokens (paper Appendix C: "representations of patch tokens and
    class tokens"), so its mapping net outputs ``T`` values (197 for ViT-B/16 at 224).
    :meth:`forward_head` classifies from the class token, ``features[:, :, 0]``, as torchvision
    does. Only the class token reaches the logits, so Grad-CAM targets the input LayerNorm of the
    last encoder block (:attr:`cam_layer`, output ``(B, T, D)``), where patch tokens still feed
    the class token through attention; :meth:`reshape_cam_activation` drops the
    ``num_prefix_tokens`` prefix tokens and folds the rest onto :meth:`patch_grid`.

    Args:
        num_classes: Number of logits.
        image_size: Input side (the position embedding is sized for it; inputs must match).
        patch_size: Patch side; must divide ``image_size``.
        num_layers: Encoder blocks.
        num_heads: Attention heads.
        hidden_dim: Embedding width ``D``.
        mlp_dim: MLP hidden width.
        dropout: Dropout rate.
        attention_dropout: Attention dropout rate.
        weights: Full torchvision weights name (``"ViT_B_16_Weights.IMAGENET1K_V1"``) whose
            architecture matches the other arguments, or ``None``. The registry name
            ``"vit_b_16"`` fills in the ViT-B/16 architecture and accepts short tags.
        progress: Show a download progress bar.

    Example:
        >>> import torch
        >>> vit = ViTBackbone(num_classes=3, image_size=32, patch_size=8, num_layers=1,
        ...                   num_heads=2, hidden_dim=16, mlp_dim=32)
        >>> vit.forward_features(torch.randn(2, 3, 32, 32)).shape  # (B, D, 1 + 4*4)
        torch.Size([2, 16, 17])
        >>> vit.patch_grid(), vit.num_prefix_tokens, vit.cam_layer
        ((4, 4), 1, 'encoder.layers.encoder_layer_0.ln_1')
    """

    def __init__(
        self,
        num_classes: int = 1000,
        image_size: int = 224,
        patch_size: int = 16,
        num_layers: int = 12,
        num_heads: int = 12,
        hidden_dim: int = 768,
        mlp_dim: int = 3072,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        weights: str | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        for name, value in [
            ("num_classes", num_classes),
            ("image_size", image_size),
            ("patch_size", patch_size),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("hidden_dim", hidden_dim),
            ("mlp_dim", mlp_dim),
        ]:
            check_positive(name, value)
        if image_size % patch_size != 0:
            raise ValueError(
                f"Expected `patch_size` to divide `image_size`, but got {patch_size} and "
                f"{image_size}."
            )
        if hidden_dim % num_heads != 0:
            raise ValueError(
                f"Expected `num_heads` to divide `hidden_dim`, but got {num_heads} and "
                f"{hidden_dim}."
            )
        resolved = _resolve_full_weights(weights)
        if resolved is not None:
            min_size = resolved.meta.get("min_size", (image_size, image_size))
            if tuple(min_size) != (image_size, image_size):
                raise ValueError(
                    f"Expected `image_size` {min_size[0]} for weights {resolved}, but got "
                    f"{image_size}."
                )
        build_classes = 1000 if resolved is not None else num_classes
        net = VisionTransformer(
            image_size=image_size,
            patch_size=patch_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            mlp_dim=mlp_dim,
            dropout=dropout,
            attention_dropout=attention_dropout,
            num_classes=build_classes,
        )
        if resolved is not None:
            net.load_state_dict(resolved.get_state_dict(progress=progress, check_hash=True))
        if build_classes != num_classes:
            head = nn.Linear(hidden_dim, num_classes)
            nn.init.zeros_(head.weight)  # torchvision's initialisation of a fresh head
            nn.init.zeros_(head.bias)
            net.heads.head = head
        self.num_classes = num_classes
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.feature_channels = hidden_dim
        self.num_prefix_tokens = 1
        self.cam_layer = f"encoder.layers.encoder_layer_{num_layers - 1}.ln_1"
        self.conv_proj = net.conv_proj
        self.class_token = net.class_token
        self.encoder = net.encoder
        self.heads = net.heads

    def patch_grid(self, image_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
        """Patch grid ``(H/p, W/p)`` for ``image_size`` (default: the model's)."""
        h, w = _pair("image_size", self.image_size if image_size is None else image_size)
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(
                f"Expected image size {self.image_size}x{self.image_size} (the position "
                f"embedding's), but got {h}x{w}."
            )
        return h // self.patch_size, w // self.patch_size

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the output tokens ``(B, D, 1 + P)``, class token first."""
        self._check_images(x, self.conv_proj)
        self.patch_grid((x.shape[-2], x.shape[-1]))  # checks the input size
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)  # (B, P, D)
        cls = self.class_token.expand(x.shape[0], -1, -1)
        tokens = self.encoder(torch.cat((cls, tokens), dim=1))  # (B, T, D)
        return tokens.transpose(1, 2)

    def forward_head(self, features: Tensor) -> Tensor:
        """Classify from the class token: ``(B, D, T)`` → ``(B, num_classes)``."""
        return self.heads(features[:, :, 0])

    def feature_spatial_shape(self, image_size: int | tuple[int, int]) -> tuple[int]:
        """``(T,)`` with ``T = 1 + (H/p)·(W/p)``."""
        n_h, n_w = self.patch_grid(image_size)
        return (self.num_prefix_tokens + n_h * n_w,)

    def reshape_cam_activation(self, activation: Tensor) -> Tensor:
        """Tokens ``(B, T, D)`` from :attr:`cam_layer` → patch map ``(B, D, H/p, W/p)``."""
        check_tensor("activation", activation, ndim=3)
        n_h, n_w = self.patch_grid()
        b, t, d = activation.shape
        if t != self.num_prefix_tokens + n_h * n_w:
            raise ValueError(
                f"Expected {self.num_prefix_tokens + n_h * n_w} tokens (B, T, D), but got "
                f"shape {tuple(activation.shape)}."
            )
        patches = activation[:, self.num_prefix_tokens :, :]
        return patches.transpose(1, 2).reshape(b, d, n_h, n_w)
