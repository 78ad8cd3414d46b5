"""Text encoders by name: `list_text_encoders()` / `create_text_encoder(name, **kwargs)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lico_lightning._registry import Registry
from lico_lightning.text._base import TextEncoder
from lico_lightning.text._hf import HFTextEncoder
from lico_lightning.text._openclip import OpenCLIPTextEncoder

__all__ = ["TEXT_ENCODERS", "create_text_encoder", "list_text_encoders"]


def _minilm(**kwargs: Any) -> TextEncoder:
    if "model_name_or_path" in kwargs:
        raise ValueError(
            "Expected no `model_name_or_path` for 'minilm' (it is the bundled offline "
            "all-MiniLM-L6-v2); use 'hf' to load another model."
        )
    return HFTextEncoder(**kwargs)


#: Text encoders by name (extend with ``TEXT_ENCODERS.register(name, factory)``).
TEXT_ENCODERS: Registry[Callable[..., TextEncoder]] = Registry("text encoder")
TEXT_ENCODERS.register("openclip", OpenCLIPTextEncoder)
TEXT_ENCODERS.register("hf", HFTextEncoder)
TEXT_ENCODERS.register("minilm", _minilm)


def list_text_encoders() -> list[str]:
    """Names accepted by :func:`create_text_encoder`.

    * ``"openclip"`` — :class:`OpenCLIPTextEncoder` (default ViT-B-32 ``openai``, the paper's);
    * ``"hf"`` — :class:`HFTextEncoder` for any Hugging Face encoder (``model_name_or_path``);
    * ``"minilm"`` — :class:`HFTextEncoder` on the offline all-MiniLM-L6-v2.

    Example:
        >>> list_text_encoders()
        ['hf', 'minilm', 'openclip']
    """
    return TEXT_ENCODERS.names()


def create_text_encoder(name: str, **kwargs: Any) -> TextEncoder:
    """Build a frozen text encoder by name; ``kwargs`` go to its constructor.

    Raises:
        ValueError: unknown ``name`` (the message lists the available ones).

    Example:
        >>> from lico_lightning.text import tiny_openclip_config
        >>> enc = create_text_encoder("openclip", model_cfg=tiny_openclip_config())
        >>> type(enc).__name__, enc.output_dim
        ('OpenCLIPTextEncoder', 32)
    """
    return TEXT_ENCODERS.create(name, **kwargs)
