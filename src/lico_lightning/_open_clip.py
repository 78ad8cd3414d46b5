"""The one place that imports ``open_clip``: build, load, the is-CLIP check, tokenizers,
preprocessing, the contrastive losses and the transformer classes the adapters look for.

A shared room (like ``_validation``): every layer that works with open_clip models imports
these helpers instead of ``open_clip`` itself, so a change of open_clip's API is met here once.
``open_clip`` is imported inside the functions, so importing the package stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeGuard

from torch import Tensor, nn

from lico_lightning._io import load_torch

__all__ = [
    "OPENAI_MEAN",
    "OPENAI_STD",
    "build_model",
    "build_zero_shot_classifier",
    "check_clip_model",
    "clip_class",
    "clip_loss_class",
    "image_transform",
    "is_clip_model",
    "is_custom_text_clip",
    "list_models",
    "load_weights",
    "model_config",
    "preprocessing",
    "simple_tokenizer",
    "tokenizer_for",
    "tower_of",
    "tower_prefix",
    "transformer_classes",
]

#: open_clip's default image normalisation (``open_clip.constants.OPENAI_DATASET_MEAN/STD``),
#: used when a model carries no preprocess config.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def list_models() -> list[str]:
    """open_clip's model names (``open_clip.list_models()``)."""
    import open_clip

    return list(open_clip.list_models())


def is_clip_model(obj: object) -> TypeGuard[nn.Module]:
    """True for an open_clip ``CLIP`` or ``CustomTextCLIP``."""
    import open_clip

    return isinstance(obj, (open_clip.CLIP, open_clip.CustomTextCLIP))


def is_custom_text_clip(obj: object) -> bool:
    """True for an open_clip ``CustomTextCLIP`` (text tower in ``model.text``)."""
    import open_clip

    return isinstance(obj, open_clip.CustomTextCLIP)


def clip_class(custom_text: bool = False) -> type[nn.Module]:
    """open_clip's ``CustomTextCLIP`` (``custom_text``: text tower in ``model.text``) or ``CLIP``."""
    import open_clip

    return open_clip.CustomTextCLIP if custom_text else open_clip.CLIP


def check_clip_model(model: object, hint: str = "open_clip.create_model(...)") -> Any:
    """Return ``model`` if it is an open_clip ``CLIP`` / ``CustomTextCLIP``, else ``TypeError``.

    Typed ``Any``: open_clip ships no type information, so its models' attributes are untyped.
    """
    if not is_clip_model(model):
        raise TypeError(
            f"Expected an open_clip CLIP or CustomTextCLIP ({hint}), but got "
            f"{type(model).__name__}."
        )
    return model


def model_config(model_name: str, model_cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """The open_clip config dict of ``model_name``, or ``model_cfg`` itself when given."""
    import open_clip

    if model_cfg is not None:
        if not isinstance(model_cfg, dict):
            raise TypeError(
                f"Expected `model_cfg` to be a dict, but got {type(model_cfg).__name__}."
            )
        return model_cfg
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        _unknown_model(model_name)
    return dict(cfg)


def _unknown_model(model_name: str) -> None:
    available = list_models()
    raise ValueError(
        f"Expected `model_name` to be an open_clip model (open_clip.list_models(), e.g. "
        f"{', '.join(available[:5])}, ...), but got {model_name!r}."
    )


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an open_clip state dict (``CLIPFineTuner.export_open_clip``, open_clip's own
    checkpoint files) or a Lightning checkpoint of a module holding the open_clip model as
    ``model`` (a ``lico-clip`` run's ``last.ckpt``) into ``model``; strict key matching.

    The file is read with ``torch.load(weights_only=True)`` (no arbitrary pickles). A file that
    cannot be read, or that holds no CLIP weights, raises ``ValueError`` naming it.
    """
    path = Path(path)
    state: Any = load_torch(path, "an open_clip state dict or a lico-clip checkpoint")
    if isinstance(state, dict) and "lora_base_fingerprint" in state:
        raise ValueError(
            f"Expected full CLIP weights, but got a LoRA checkpoint ({path}): it holds only the "
            "adapters; write the merged weights with CLIPFineTuner.export_open_clip, or resume "
            "it with the same hyperparameters."
        )
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        inner = state["state_dict"]
        state = {k[len("model.") :]: v for k, v in inner.items() if k.startswith("model.")}
        if not state:
            raise ValueError(
                f"Expected a checkpoint whose state_dict holds the CLIP model under 'model.', but "
                f"got keys like {sorted(inner)[:3]} in {path}."
            )
    if not isinstance(state, dict):
        raise ValueError(
            f"Expected {path} to hold a state dict, but it holds a {type(state).__name__}."
        )
    if state and all(str(k).startswith("module.") for k in state):  # saved from DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model


def build_model(
    model_name: str,
    pretrained: str | None = None,
    model_cfg: dict[str, Any] | None = None,
    *,
    patch_dropout: float | None = None,
    cache_dir: str | None = None,
) -> nn.Module:
    """Build an open_clip model: by ``model_name`` and ``pretrained`` tag or file, or from a
    config dict ``model_cfg`` (tiny models trained from scratch offline; ``pretrained`` is then
    a weights file, :func:`load_weights`).

    A ``pretrained`` tag that needs QuickGELU (e.g. ``openai``) gets it, as open_clip's own
    training script does; a local file is loaded with :func:`load_weights`, so a ``lico-clip``
    checkpoint works as well as an exported state dict.
    """
    import open_clip

    if model_cfg is not None:
        if not isinstance(model_cfg, dict):
            raise TypeError(
                f"Expected `model_cfg` to be a dict, but got {type(model_cfg).__name__}."
            )
        cfg = json.loads(json.dumps(model_cfg))  # deep copy, plain types
        if patch_dropout is not None:
            cfg.setdefault("vision_cfg", {})["patch_dropout"] = patch_dropout
        model = clip_class(bool(cfg.pop("custom_text", False)))(**cfg)
        if pretrained is not None:
            load_weights(model, pretrained)
        return check_clip_model(model)
    if model_name not in open_clip.list_models():
        _unknown_model(model_name)
    is_file = pretrained is not None and Path(pretrained).is_file()
    quick_gelu = False
    if pretrained is not None and not is_file:
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        quick_gelu = bool(tag_cfg.get("quick_gelu", False)) if tag_cfg else False
    model = open_clip.create_model(
        model_name,
        pretrained=None if is_file else pretrained,
        force_quick_gelu=quick_gelu,
        force_patch_dropout=patch_dropout,
        cache_dir=cache_dir,
    )
    if is_file and pretrained is not None:
        load_weights(model, pretrained)
    return check_clip_model(model)


def simple_tokenizer(context_length: int) -> Any:
    """open_clip's BPE ``SimpleTokenizer`` at ``context_length``."""
    import open_clip

    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


def tokenizer_for(model_name: str, model_cfg: dict[str, Any] | None, context_length: int) -> Any:
    """The tokenizer of a named open_clip model, or a ``SimpleTokenizer`` for a config dict or
    an unknown name."""
    import open_clip

    if model_cfg is None and model_name in open_clip.list_models():
        return open_clip.get_tokenizer(model_name)
    return simple_tokenizer(context_length)


def preprocessing(
    model_name: str = "ViT-B-32", model_cfg: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The model's image size, mean/std, resize mode, context length and tokenizer (open_clip's
    own); see :func:`lico_lightning.data.open_clip_preprocessing`."""
    cfg = model_config(model_name, model_cfg)
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    pre = {**vision.get("preprocess_cfg", {}), **cfg.get("preprocess_cfg", {})}
    size = vision.get("image_size", 224)
    context = int(text.get("context_length", 77))
    return {
        "image_size": int(size if isinstance(size, int) else size[0]),
        "mean": tuple(pre.get("mean", OPENAI_MEAN)),
        "std": tuple(pre.get("std", OPENAI_STD)),
        "resize_mode": pre.get("resize_mode", "shortest"),
        "interpolation": pre.get("interpolation", "bicubic"),
        "context_length": context,
        "tokenizer": tokenizer_for(model_name, model_cfg, context),
    }


def image_transform(pre: dict[str, Any], train: bool) -> Any:
    """open_clip's image transform for a :func:`preprocessing` dict (train: random resized crop)."""
    import open_clip

    return open_clip.image_transform(
        pre["image_size"],
        is_train=train,
        mean=pre["mean"],
        std=pre["std"],
        resize_mode=pre["resize_mode"],
        interpolation=pre["interpolation"],
    )


def clip_loss_class(name: str) -> type[nn.Module]:
    """open_clip's contrastive loss class: ``"clip"`` (``ClipLoss``) or ``"siglip"``
    (``SigLipLoss``)."""
    from open_clip.loss import ClipLoss, SigLipLoss

    classes: dict[str, type[nn.Module]] = {"clip": ClipLoss, "siglip": SigLipLoss}
    if name not in classes:
        raise ValueError(f"Expected one of {sorted(classes)}, but got {name!r}.")
    return classes[name]


def build_zero_shot_classifier(
    model: nn.Module, tokenizer: Any, class_names: list[str], templates: list[Any], device: Any
) -> Tensor:
    """open_clip's zero-shot classifier ``(K, num_classes)``: the mean normalised text embedding
    of every class over the templates."""
    import open_clip

    return open_clip.build_zero_shot_classifier(
        model, tokenizer, class_names, templates, device=device
    )


def transformer_classes() -> dict[str, Any]:
    """open_clip's ``VisionTransformer``, ``TextTransformer`` and ``ResidualAttentionBlock``
    classes (what the adapters check a tower against)."""
    from open_clip.transformer import ResidualAttentionBlock, TextTransformer, VisionTransformer

    return {
        "VisionTransformer": VisionTransformer,
        "TextTransformer": TextTransformer,
        "ResidualAttentionBlock": ResidualAttentionBlock,
    }


def tower_of(parameter_name: str) -> str:
    """The part of an open_clip ``CLIP`` / ``CustomTextCLIP`` a parameter belongs to:
    ``"image"`` (``visual.*``), ``"logit_scale"`` (``logit_scale``, ``logit_bias``) or ``"text"``
    (the rest: ``transformer.*``, ``token_embedding``, ``positional_embedding``, ``ln_final``,
    ``text_projection``, or ``text.*``)."""
    if parameter_name.startswith("visual."):
        return "image"
    if parameter_name.split(".")[0] in ("logit_scale", "logit_bias"):
        return "logit_scale"
    return "text"


def tower_prefix(model: nn.Module, tower: str) -> str:
    """The module-name prefix of a tower's transformer: ``"visual."`` for ``"image"``;
    ``"text."`` (``CustomTextCLIP``) or ``"transformer."`` (``CLIP``) for ``"text"``."""
    if tower == "image":
        return "visual."
    return "text." if is_custom_text_clip(model) else "transformer."
