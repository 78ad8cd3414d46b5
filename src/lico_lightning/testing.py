"""Tiny random models for tests, doctests, examples and benchmarks (not for training real models).

Every builder is deterministic given ``seed`` and never touches the global RNG: the model is
constructed inside :func:`torch.random.fork_rng` (so the caller's global RNG state is left as it
was) and every randomly initialised tensor is then redrawn from a local
:class:`torch.Generator` seeded with ``seed``. Tensors that the constructor sets to a constant
(LayerNorm weights, zero biases, ``logit_scale``) are kept.

* :func:`tiny_clip` — a tiny open_clip ``CLIP`` (or ``CustomTextCLIP``) with the real BPE
  vocabulary, so open_clip's tokenizer works;
* :func:`tiny_dual_encoder` — the same wrapped as an
  :class:`~lico_lightning.explain.OpenCLIPDualEncoder`;
* :func:`tiny_cnn` — a two-convolution classifier (conv–BN–ReLU–conv–ReLU–pool–linear).

Example:
    >>> from lico_lightning.testing import tiny_clip, tiny_dual_encoder
    >>> state = torch.random.get_rng_state()
    >>> a, b = tiny_clip(seed=0), tiny_clip(seed=0)
    >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    True
    >>> torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
    True
    >>> tiny_dual_encoder().image_spec.grid_size
    (4, 4)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lico_lightning import _open_clip as open_clip_helpers
from lico_lightning._validation import check_int

if TYPE_CHECKING:
    from lico_lightning.explain import OpenCLIPDualEncoder

__all__ = ["reinitialize", "tiny_clip", "tiny_cnn", "tiny_dual_encoder"]


def reinitialize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Redraw every non-constant parameter of ``module`` from a generator seeded with ``seed``.

    A parameter whose elements are all equal (set to a constant by its constructor) is kept;
    any other is replaced, in ``named_parameters`` order, by normal noise with standard
    deviation ``fan_in ** -0.5`` for convolution kernels, ``(rows · cols) ** -0.25`` for
    matrices (whichever side is the input) and ``numel ** -0.5`` for vectors. In place;
    returns ``module``.

    Example:
        >>> net = reinitialize(nn.Linear(4, 2), seed=1)
        >>> torch.equal(net.weight, reinitialize(nn.Linear(4, 2), seed=1).weight)
        True
    """
    check_int("seed", seed, 0)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in module.named_parameters():
            flat = param.detach().flatten()
            if flat.numel() == 0 or bool((flat == flat[0]).all()):
                continue
            if param.ndim >= 3:
                std = math.prod(param.shape[1:]) ** -0.5
            elif param.ndim == 2:
                std = (param.shape[0] * param.shape[1]) ** -0.25
            else:
                std = param.numel() ** -0.5
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float64)
            param.copy_((noise * std).to(param.dtype))
    return module


def tiny_clip(
    seed: int = 0,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    width: int = 32,
    layers: int = 2,
    embed_dim: int = 16,
    context_length: int = 77,
    custom_text: bool = False,
    resnet: bool = False,
    vision_cfg: dict[str, Any] | None = None,
    text_cfg: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """A tiny random open_clip CLIP: ViT image tower, causal text tower, CLIP's vocabulary.

    Args:
        seed: seed of the local generator the weights are drawn from.
        image_size: input size H = W in pixels.
        patch_size: ViT patch size (grid ``image_size // patch_size``).
        width: width of both towers (heads of width 16 in the image tower, 2 heads in text).
        layers: blocks in each tower.
        embed_dim: K, the joint embedding width.
        context_length: S, tokens per caption.
        custom_text: build an ``open_clip.CustomTextCLIP`` (text tower in ``model.text``).
        resnet: a ``ModifiedResNet`` image tower (``layers (1, 1, 1, 1)``, width 8) instead of
            the ViT (no token layers; for tests of what such towers support).
        vision_cfg: extra / overriding keys of open_clip's ``vision_cfg`` (e.g. ``pool_type``).
        text_cfg: extra / overriding keys of open_clip's ``text_cfg``.
        **model_kwargs: passed to the open_clip model class (e.g. ``init_logit_bias=-2.0``
            for a SigLIP-like bias).

    Returns:
        the open_clip model in eval mode (float32, CPU).

    Example:
        >>> model = tiny_clip(seed=0)
        >>> model.encode_image(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 16])
    """
    for name, value, low in (
        ("seed", seed, 0),
        ("image_size", image_size, 1),
        ("patch_size", patch_size, 1),
        ("width", width, 16),
        ("layers", layers, 1),
        ("embed_dim", embed_dim, 1),
        ("context_length", context_length, 2),
    ):
        check_int(name, value, low)
    if resnet:
        vision: dict[str, Any] = {
            "layers": (1, 1, 1, 1),
            "width": 8,
            "head_width": 8,
            "image_size": image_size,
        }
    else:
        vision = {
            "layers": layers,
            "width": width,
            "head_width": 16,
            "patch_size": patch_size,
            "image_size": image_size,
        }
    vision.update(vision_cfg or {})
    text = {
        "context_length": context_length,
        "vocab_size": 49408,
        "width": width,
        "heads": 2,
        "layers": layers,
    }
    text.update(text_cfg or {})
    cls = open_clip_helpers.clip_class(custom_text)
    with torch.random.fork_rng(devices=[]):
        model = cls(embed_dim, vision, text, **model_kwargs)
    return reinitialize(model, seed).eval()


def tiny_dual_encoder(seed: int = 0, **kwargs: Any) -> OpenCLIPDualEncoder:
    """:func:`tiny_clip` wrapped as an :class:`~lico_lightning.explain.OpenCLIPDualEncoder`.

    Example:
        >>> enc = tiny_dual_encoder()
        >>> enc.tokenize(["a dog"]).shape
        torch.Size([1, 77])
    """
    from lico_lightning.explain import OpenCLIPDualEncoder

    return OpenCLIPDualEncoder(tiny_clip(seed, **kwargs))


def tiny_cnn(num_classes: int = 3, *, in_channels: int = 3, seed: int = 0) -> nn.Sequential:
    """A small classifier: conv(6)–BN–ReLU–conv(8)–ReLU–global pool–flatten–linear.

    Layers are addressed by index (``"0"`` … ``"7"``; ``"3"`` is the last convolution, the
    usual CAM target layer).

    Example:
        >>> tiny_cnn(4)(torch.zeros(2, 3, 10, 10)).shape
        torch.Size([2, 4])
    """
    check_int("num_classes", num_classes, 1)
    check_int("in_channels", in_channels, 1)
    with torch.random.fork_rng(devices=[]):
        net = nn.Sequential(
            nn.Conv2d(in_channels, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, num_classes),
        )
    reinitialize(net, seed)
    return net
