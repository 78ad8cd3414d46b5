"""Contrastive fine-tuning (or training from scratch) of an open_clip model as a LightningModule."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch
from pytorch_lightning.strategies import FSDPStrategy
from torch import Tensor, nn

from lico_lightning import _open_clip as open_clip_helpers
from lico_lightning._io import save_torch, write_text
from lico_lightning._registry import Registry
from lico_lightning._safety import full_parameters
from lico_lightning._validation import check_choice, check_int, check_real
from lico_lightning.functional import first_occurrences
from lico_lightning.metrics.retrieval import RetrievalRecallAtK
from lico_lightning.modules._checkpoint import CheckpointOwner
from lico_lightning.modules.lico_classifier import _fingerprint
from lico_lightning.modules.lora import LORA_TARGETS, apply_lora, lora_state_dict, merged_state_dict

__all__ = [
    "CLIP_LOSSES",
    "CLIPFineTuner",
    "clip_param_groups",
    "unpadded_order",
    "warmup_cosine_lambda",
]

LOGIT_SCALE_MAX = math.log(100.0)


def _clip_loss(rank: int, world_size: int) -> nn.Module:
    # local_loss + gather_with_grad: the only setting that scales (open_clip's maintainers)
    return open_clip_helpers.clip_loss_class("clip")(
        local_loss=True, gather_with_grad=True, cache_labels=True, rank=rank, world_size=world_size
    )


def _siglip_loss(rank: int, world_size: int) -> nn.Module:
    return open_clip_helpers.clip_loss_class("siglip")(
        cache_labels=True, rank=rank, world_size=world_size
    )


CLIP_LOSSES: Registry[Any] = Registry("contrastive loss")
CLIP_LOSSES.register("clip", _clip_loss)
CLIP_LOSSES.register("siglip", _siglip_loss)


def clip_param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    image_lr: float | None = None,
    text_lr: float | None = None,
    logit_scale_lr: float | None = None,
    image_weight_decay: float | None = None,
    text_weight_decay: float | None = None,
) -> list[dict[str, Any]]:
    """open_clip's AdamW groups: no weight decay for ``ndim < 2`` or names with bn/ln/bias/logit_scale.

    The rule of open_clip's trainer (norms, biases, logit_scale/bias, class embeddings); only
    trainable parameters (locked towers are left out). Without per-tower options the result is
    open_clip's two groups ``[no_decay, decay]``. With any of them, the parameters are split by
    part (:func:`lico_lightning._open_clip.tower_of`: ``visual.*`` is the image tower,
    ``logit_scale``/``logit_bias`` the logit scale, the rest the text tower) into the groups
    ``image/no_decay``, ``image/decay``, ``text/no_decay``, ``text/decay``, ``logit_scale``
    (each dict has a ``"name"``); a group gets ``"lr"`` when its part's learning rate is given
    (else the optimizer's), and its part's weight decay in the decayed group (no-decay groups
    keep 0).

    Args:
        model: an open_clip model (or any module, without per-tower options).
        weight_decay: the decayed parameters' weight decay.
        image_lr: learning rate of the image tower (``None``: the optimizer's).
        text_lr: learning rate of the text tower.
        logit_scale_lr: learning rate of ``logit_scale`` (and ``logit_bias``).
        image_weight_decay: weight decay of the image tower's decayed parameters
            (``None``: ``weight_decay``).
        text_weight_decay: weight decay of the text tower's decayed parameters.

    Example:
        >>> groups = clip_param_groups(nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3)), 0.1)
        >>> [(g["weight_decay"], len(g["params"])) for g in groups]
        [(0.0, 3), (0.1, 1)]
    """

    def exclude(name: str, p: nn.Parameter) -> bool:
        return p.ndim < 2 or any(k in name for k in ("bn", "ln", "bias", "logit_scale"))

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    options = (image_lr, text_lr, logit_scale_lr, image_weight_decay, text_weight_decay)
    if all(o is None for o in options):
        return [
            {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": weight_decay},
        ]
    lrs = {"image": image_lr, "text": text_lr, "logit_scale": logit_scale_lr}
    decays = {
        "image": weight_decay if image_weight_decay is None else image_weight_decay,
        "text": weight_decay if text_weight_decay is None else text_weight_decay,
        "logit_scale": 0.0,
    }
    groups = []
    for part, kinds in (
        ("image", ("no_decay", "decay")),
        ("text", ("no_decay", "decay")),
        ("logit_scale", ("no_decay",)),
    ):
        for kind in kinds:
            params = [
                p
                for n, p in named
                if open_clip_helpers.tower_of(n) == part and exclude(n, p) == (kind == "no_decay")
            ]
            group: dict[str, Any] = {
                "params": params,
                "weight_decay": 0.0 if kind == "no_decay" else decays[part],
                "name": part if part == "logit_scale" else f"{part}/{kind}",
            }
            if lrs[part] is not None:
                group["lr"] = lrs[part]
            groups.append(group)
    return groups


def warmup_cosine_lambda(warmup_steps: int, total_steps: int, schedule: str = "cosine"):
    """Per-step LR factor: linear warmup to 1 over ``warmup_steps``, then cosine to 0 (or constant).

    .. math::

        f(t) = \\begin{cases} (t + 1) / W & t < W \\\\
        \\tfrac12 \\left(1 + \\cos \\pi \\tfrac{t - W}{T - W}\\right) & t \\ge W \\end{cases}

    (open_clip's ``cosine_lr``.)

    Example:
        >>> f = warmup_cosine_lambda(2, 6)
        >>> [round(f(t), 3) for t in range(6)]
        [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        span = max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))

    return factor


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def unpadded_order(per_rank: int, world_size: int, length: int) -> Tensor:
    """Rows of rank-major gathered eval outputs ``(W·n, ...)`` in dataset order, without the
    samples a ``DistributedSampler(shuffle=False)`` pads in: it gives rank ``r`` the padded
    positions ``r, r + W, ...``, so row ``j`` of rank ``r`` is position ``j·W + r``, padding when
    ``≥ length``.

    Example:
        >>> unpadded_order(per_rank=3, world_size=2, length=5).tolist()  # rank 1's last is padding
        [0, 3, 1, 4, 2]
    """
    rank = torch.arange(world_size).repeat_interleave(per_rank)
    row = torch.arange(per_rank).repeat(world_size)
    position = row * world_size + rank
    keep = (position < length).nonzero().flatten()
    return keep[torch.argsort(position[keep])]


class CLIPFineTuner(CheckpointOwner, family=True):
    """Train or fine-tune an open_clip model with its own contrastive loss and optimiser recipe.

    * **Model**: ``model_name`` + ``pretrained`` (an open_clip tag such as ``"openai"`` or a local
      checkpoint file), or ``model_cfg`` (an open_clip config dict, for tiny models trained from
      scratch offline), or an already built open_clip ``model``.
    * **Loss**: ``"clip"`` (open_clip's ``ClipLoss`` with ``local_loss=True,
      gather_with_grad=True``) or ``"siglip"`` (``SigLipLoss``; the model needs a
      ``logit_bias``). Rank and world size come from the Trainer, so under DDP every process's
      image features meet the text features of every process (negatives across GPUs) with
      gradients. For ``"clip"`` with features :math:`u_i, v_j` (L2-normalised) and
      :math:`s = e^{\\text{logit\\_scale}}`:

      .. math::

          \\mathcal{L} = \\tfrac12 \\Big[ \\operatorname{CE}(s\\,U V^\\top, I) +
          \\operatorname{CE}(s\\,V U^\\top, I) \\Big]

    * **Optimiser**: AdamW (betas 0.9/0.98, eps 1e-6) with no weight decay for ``ndim < 2``
      parameters, norms, biases and logit_scale (:func:`clip_param_groups`); per-step linear
      warmup + cosine (:func:`warmup_cosine_lambda`); logit_scale clamped to ``[0, ln 100]``
      after every optimiser step. Precision is the Trainer's.
    * **Evaluation** (validation / test): image→text and text→image R@K over the *whole* split
      (embeddings gathered from every process; several captions per image — a query counts
      when any of its captions is in the top K), logged as ``{stage}/i2t_R@{k}``,
      ``{stage}/t2i_R@{k}`` and their mean ``{stage}/R@1``; the in-batch ``{stage}/loss``; and,
      when the data module has a ``zeroshot`` classification module, ``{stage}/zeroshot_acc``
      from class-name prompts (open_clip's ``build_zero_shot_classifier``).
    * **Export**: :meth:`export_open_clip` writes a plain open_clip state dict that
      ``open_clip.create_model(name, pretrained=path)`` loads, optionally WiSE-FT-interpolated
      with the initial weights (:meth:`wise_ft_state_dict`).
    * **FSDP** (Lightning's ``FSDPStrategy`` with its ``use_orig_params=True``): the 0-d
      ``logit_scale`` / ``logit_bias`` become 1-element parameters (FSDP shards no 0-d
      parameter; the same values and loss); :meth:`plain_state_dict` and :meth:`export_open_clip`
      gather the whole model (a collective: call them on every rank) and give them 0-d again;
      loading a checkpoint reshapes them either way; ``accum_freq > 1`` is refused.

    Batches are ``(images, tokens, index)`` (see :mod:`lico_lightning.data`), ``index`` the
    image's position in the split. Note: Lightning's ``accumulate_grad_batches`` does **not**
    enlarge the contrastive batch — every micro-batch only sees its own negatives; use more
    devices (negatives are gathered) or a larger batch instead.

    Args:
        model_name: open_clip model name (``open_clip.list_models()``).
        pretrained: open_clip pretrained tag or local checkpoint file (``None``: random init).
        model_cfg: open_clip config dict instead of ``model_name`` (``"custom_text": true`` for
            a ``CustomTextCLIP``).
        model: an open_clip model instance instead of either (not saved in hyperparameters).
        loss: ``"clip"`` or ``"siglip"``.
        lr: peak learning rate (fine-tuning: ~1e-5; from scratch: ~5e-4).
        weight_decay: AdamW weight decay of the decayed group.
        betas: AdamW betas.
        eps: AdamW eps.
        warmup_steps: linear warmup steps.
        lr_schedule: ``"cosine"`` (to 0 at the last step) or ``"constant"`` after warmup.
        lock_image: freeze the image tower (open_clip ``lock_image_tower``).
        lock_image_unlocked_groups: last layer groups of the image tower left trainable.
        lock_image_freeze_bn_stats: freeze BatchNorm statistics of the locked image tower.
        lock_text: freeze the text tower (open_clip ``lock_text_tower``).
        lock_text_unlocked_layers: last text layers left trainable (in open_clip 3.3, ``1``
            unlocks only the projection).
        lock_text_freeze_layer_norm: keep the locked text tower's LayerNorms frozen.
        grad_checkpointing: open_clip ``set_grad_checkpointing()`` (memory for compute).
        patch_dropout: fraction of image patches dropped in training (``None``: the config's).
        retrieval_k: R@K cut-offs.
        zeroshot_templates: prompt templates (``"{}"`` = class name) for zero-shot accuracy.
        class_names: zero-shot class names (default: the data module's ``class_names``).
        cache_dir: where open_clip caches downloaded weights.
        check_finite_loss: stop training with an error naming the batch's sample indices when a
            training loss is NaN or infinite, before the optimizer step spreads it into the
            weights (one host synchronisation per step; ``False`` skips the check).
        accum_freq: contrastive gradient accumulation: each training batch is split into
            ``accum_freq`` micro-batches; the features of all are computed without gradients,
            then each micro-batch is recomputed with gradients against the features of all
            (open_clip's ``--accum-freq``), so a batch of ``B`` costs the activation memory of
            ``B / accum_freq`` and keeps all ``B − 1`` negatives. The gradient equals that of
            the whole batch (:meth:`accumulated_backward`). Lightning's
            ``accumulate_grad_batches`` instead sums the gradients of batches that never see
            each other's negatives. ``accum_freq > 1`` runs the optimizer step itself (manual
            optimization), so the Trainer's ``gradient_clip_val`` and
            ``accumulate_grad_batches`` are not available with it.
        image_lr: learning rate of the image tower (``None``: ``lr``); see
            :func:`clip_param_groups` (open_clip's no-decay rule is kept in every part).
        text_lr: learning rate of the text tower (``None``: ``lr``).
        logit_scale_lr: learning rate of ``logit_scale`` and ``logit_bias`` (``None``: ``lr``).
        image_weight_decay: weight decay of the image tower (``None``: ``weight_decay``).
        text_weight_decay: weight decay of the text tower (``None``: ``weight_decay``).
        lora_rank: LoRA rank r (``None``: full fine-tuning). The whole model is frozen and
            low-rank adapters :math:`W + \\tfrac{\\alpha}{r} BA` are put on the ``lora_targets``
            of the ``lora_towers`` (:func:`lico_lightning.modules.lora.apply_lora`); only the
            adapters train and only they are checkpointed, with a fingerprint of the frozen
            base (rebuilt from the hyperparameters on load, checked against it);
            :meth:`export_open_clip` writes the merged plain open_clip state dict.
        lora_alpha: LoRA scale numerator :math:`\\alpha`.
        lora_dropout: LoRA adapter input dropout.
        lora_targets: module-name patterns (``fnmatch``, whole name or dotted suffix):
            ``"attn"`` adapts the fused q/k/v ``in_proj_weight``, ``"attn.out_proj"``,
            ``"mlp.c_fc"`` and ``"mlp.c_proj"`` the Linear weights.
        lora_towers: ``"image"`` and/or ``"text"``.

    Example:
        >>> from lico_lightning.text import tiny_openclip_config
        >>> module = CLIPFineTuner(model_cfg=tiny_openclip_config(context_length=16), lr=1e-3)
        >>> g = torch.Generator().manual_seed(0)
        >>> images, tokens = torch.randn(4, 3, 32, 32, generator=g), module.tokenize(["a cat"] * 4)
        >>> loss = module.contrastive_loss(images, tokens)
        >>> float(loss.detach()) > 0, module.model.logit_scale.exp().item() > 14
        (True, True)
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = None,
        model_cfg: dict[str, Any] | None = None,
        model: nn.Module | None = None,
        loss: str = "clip",
        lr: float = 1e-5,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup_steps: int = 0,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        lock_image: bool = False,
        lock_image_unlocked_groups: int = 0,
        lock_image_freeze_bn_stats: bool = False,
        lock_text: bool = False,
        lock_text_unlocked_layers: int = 0,
        lock_text_freeze_layer_norm: bool = True,
        grad_checkpointing: bool = False,
        patch_dropout: float | None = None,
        retrieval_k: int | Sequence[int] = (1, 5, 10),
        zeroshot_templates: str | Sequence[str] = ("a photo of a {}.",),
        class_names: list[str] | None = None,
        cache_dir: str | None = None,
        check_finite_loss: bool = True,
        accum_freq: int = 1,
        image_lr: float | None = None,
        text_lr: float | None = None,
        logit_scale_lr: float | None = None,
        image_weight_decay: float | None = None,
        text_weight_decay: float | None = None,
        lora_rank: int | None = None,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        lora_targets: Sequence[str] = LORA_TARGETS,
        lora_towers: Sequence[str] = ("image", "text"),
    ) -> None:
        super().__init__()
        # a single value is one cut-off / one template (never the characters of a string)
        if isinstance(retrieval_k, int):
            retrieval_k = (retrieval_k,)
        if isinstance(zeroshot_templates, str):
            zeroshot_templates = (zeroshot_templates,)
        if not isinstance(retrieval_k, Sequence) or not isinstance(zeroshot_templates, Sequence):
            raise TypeError(
                "Expected `retrieval_k` to be an int or a sequence of ints and "
                "`zeroshot_templates` a string or a sequence of strings, but got "
                f"{type(retrieval_k).__name__} and {type(zeroshot_templates).__name__}."
            )
        for template in zeroshot_templates:
            if not isinstance(template, str):
                raise TypeError(
                    f"Expected every zero-shot template to be a string, but got {template!r}."
                )
        self.save_hyperparameters(ignore=["model"])
        CLIP_LOSSES.get(loss)  # unknown names list the available ones
        check_real("lr", lr, low=0.0)
        check_real("weight_decay", weight_decay, low=0.0, strict=False)
        check_int("warmup_steps", warmup_steps, 0)
        check_choice("lr_schedule", lr_schedule, ("cosine", "constant"))
        if patch_dropout is not None and not 0.0 <= patch_dropout < 1.0:
            raise ValueError(f"Expected `patch_dropout` in [0, 1), but got {patch_dropout!r}.")
        self.retrieval_k = tuple(check_int("retrieval_k", k, 1) for k in retrieval_k)
        for template in zeroshot_templates:
            if "{}" not in template:
                raise ValueError(
                    f"Expected every zero-shot template to contain '{{}}', but got {template!r}."
                )
        self._check_part_options()
        if model is None:
            model = open_clip_helpers.build_model(
                model_name, pretrained, model_cfg, patch_dropout=patch_dropout, cache_dir=cache_dir
            )
        self.model = open_clip_helpers.check_clip_model(model)
        if loss == "siglip" and getattr(self.model, "logit_bias", None) is None:
            raise ValueError(
                "Expected a model with a logit_bias for loss='siglip' (init_logit_bias=-10 in its "
                "config, as open_clip's SigLIP models have), but got one without."
            )
        if lock_image:
            self.model.lock_image_tower(lock_image_unlocked_groups, lock_image_freeze_bn_stats)
        if lock_text:
            self.model.lock_text_tower(lock_text_unlocked_layers, lock_text_freeze_layer_norm)
        if lora_rank is not None:
            apply_lora(
                self.model,
                lora_rank,
                lora_alpha,
                lora_dropout,
                lora_targets,
                [open_clip_helpers.tower_prefix(self.model, t) for t in lora_towers],
            )
        if grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.loss_fn = CLIP_LOSSES.create(loss, 0, 1)  # rank/world size set in setup()
        check_int("accum_freq", accum_freq, 1)
        # open_clip's loop at accum_freq=1 (bitwise); micro-batch backward passes otherwise
        self.automatic_optimization = accum_freq == 1
        self._eval: dict[str, list[Tensor]] = {}
        self._zeroshot: Tensor | None = None
        self._tokenizer: Any = None
        self.zeroshot_acc: nn.ModuleDict = nn.ModuleDict()
        self._made_1d: set[str] = set()  # 0-d parameters made 1-element for FSDP

    model: Any  # an open_clip CLIP / CustomTextCLIP

    def _check_part_options(self) -> None:
        """Per-part optimiser options: non-negative, and only for parts that train."""
        hp = self._hp
        for name in (
            "image_lr",
            "text_lr",
            "logit_scale_lr",
            "image_weight_decay",
            "text_weight_decay",
        ):
            if hp[name] is not None:  # a learning rate of 0 holds a part still
                check_real(name, hp[name], low=0.0, strict=False)
        lora = hp.lora_rank is not None
        if lora:
            check_int("lora_rank", hp.lora_rank, 1)
            towers = hp.lora_towers
            if isinstance(towers, str) or not towers:
                raise ValueError(
                    "Expected `lora_towers` to be a non-empty sequence of 'image' / 'text', but "
                    f"got {towers!r}."
                )
            for tower in towers:
                check_choice("lora_towers", tower, ("image", "text"))
        frozen = {
            "image": (hp.lock_image and hp.lock_image_unlocked_groups == 0)
            or (lora and "image" not in hp.lora_towers),
            "text": (hp.lock_text and hp.lock_text_unlocked_layers == 0)
            or (lora and "text" not in hp.lora_towers),
            "logit_scale": lora,
        }
        for part, names in (
            ("image", ("image_lr", "image_weight_decay")),
            ("text", ("text_lr", "text_weight_decay")),
            ("logit_scale", ("logit_scale_lr",)),
        ):
            given = {n: hp[n] for n in names if hp[n] is not None}
            if frozen[part] and given:
                why = (
                    f"lock_{part}=True"
                    if part != "logit_scale" and hp[f"lock_{part}"]
                    else f"lora_rank={hp.lora_rank} (only the adapters of {list(hp.lora_towers)} "
                    "train)"
                )
                raise ValueError(
                    f"Expected no optimiser options for the {part} part, which does not train "
                    f"({why}), but got {given}."
                )

    # ------------------------------------------------------------------ helpers
    @property
    def _hp(self) -> Any:
        return self.hparams

    @property
    def context_length(self) -> int:
        """The text tower's context length S."""
        return int(self.model.context_length)

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """``(B, S)`` tokens with open_clip's BPE tokenizer at the model's context length."""
        if self._tokenizer is None:
            self._tokenizer = open_clip_helpers.tokenizer_for(
                self._hp.model_name, self._hp.model_cfg, self.context_length
            )
        return self._tokenizer(list(texts)).to(self.device)

    def setup(self, stage: str) -> None:
        """Give the loss the Trainer's rank and world size (negatives gathered across ranks);
        under FSDP, prepare the model for sharding (:meth:`_prepare_fsdp`)."""
        trainer = self._trainer
        rank, world = (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)
        self.configure_loss(rank, world)
        if trainer is not None and isinstance(trainer.strategy, FSDPStrategy):
            self._prepare_fsdp()

    def _prepare_fsdp(self) -> None:
        """Before Lightning's FSDP wraps the model (``setup`` runs first): refuse contrastive
        accumulation, and make the 0-d ``logit_scale`` / ``logit_bias`` 1-element parameters
        (FSDP shards no 0-d parameter; open_clip's ``nonscalar_logit_scale=True``; the same
        values, broadcast alike; :meth:`plain_state_dict` and checkpoint loading reshape)."""
        if self._hp.accum_freq > 1:
            raise ValueError(
                f"Expected accum_freq=1 under FSDP, but got accum_freq={self._hp.accum_freq}: "
                "its micro-batch backward passes would run inside the sharded forward, which "
                "FSDP does not allow; use more devices or a larger batch per device instead."
            )
        for name in ("logit_scale", "logit_bias"):
            param = getattr(self.model, name, None)
            if isinstance(param, nn.Parameter) and param.ndim == 0:
                param.data = param.data.reshape(1)
                self._made_1d.add(name)

    def _full_parameters(self) -> Any:
        """The whole parameters of an FSDP-sharded model (a collective; a no-op unsharded)."""
        trainer = self._trainer
        wrapped = trainer.strategy.model if trainer is not None else None
        return full_parameters(wrapped if isinstance(wrapped, nn.Module) else None)

    def configure_loss(self, rank: int, world_size: int) -> None:
        """Rebuild the contrastive loss for ``rank`` of ``world_size`` processes."""
        self.loss_fn = CLIP_LOSSES.create(self._hp.loss, rank, world_size)

    def _check_batch(self, images: Tensor, tokens: Tensor) -> None:
        """Shapes, dtypes, channels, image size and token range, before any model work."""
        if not isinstance(images, Tensor) or not isinstance(tokens, Tensor):
            raise TypeError(
                "Expected `images` and `tokens` to be tensors, but got "
                f"{type(images).__name__} and {type(tokens).__name__}."
            )
        size = getattr(self.model.visual, "image_size", None)
        size = (size, size) if isinstance(size, int) else tuple(size) if size else None
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                "Expected normalised float images of shape (B, 3, H, W), but got "
                f"{images.dtype} images of shape {tuple(images.shape)}; use the data module's "
                "preprocessing (lico_lightning.data.open_clip_preprocessing)."
            )
        if size is not None and tuple(images.shape[-2:]) != size:
            raise ValueError(
                f"Expected images of size {size} for this model, but got "
                f"{tuple(images.shape[-2:])}."
            )
        if tokens.dtype not in (torch.int32, torch.int64):
            raise TypeError(
                f"Expected integer caption tokens (torch.long), but got {tokens.dtype}; "
                "tokenise with the model's tokenizer / data module."
            )
        if tokens.ndim != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(
                f"Expected caption tokens of shape (B, {self.context_length}) for this model's "
                f"context length, but got {tuple(tokens.shape)}; tokenise with the model's "
                "tokenizer / data module."
            )
        if images.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"Expected one caption per image, but got {images.shape[0]} images and "
                f"{tokens.shape[0]} captions."
            )
        vocab = getattr(self.model, "vocab_size", None)
        if vocab is None:
            embedding = getattr(getattr(self.model, "text", self.model), "token_embedding", None)
            vocab = getattr(embedding, "num_embeddings", None)
        if vocab is not None and tokens.numel() > 0:
            low, high = torch.stack([tokens.min(), tokens.max()]).tolist()  # one host sync
            if low < 0 or high >= vocab:
                raise ValueError(
                    f"Expected token ids in [0, {vocab}) for this model's vocabulary, but got "
                    f"ids in [{low}, {high}]."
                )

    def contrastive_loss(self, images: Tensor, tokens: Tensor) -> Tensor:
        """open_clip's forward + loss on a batch (this process's part under DDP)."""
        self._check_batch(images, tokens)
        out = self.model(images, tokens)
        if isinstance(out, dict):
            return self.loss_fn(**out)
        return self.loss_fn(*out)

    def _model_outputs(self, images: Tensor, tokens: Tensor) -> dict[str, Tensor]:
        out = self.model(images, tokens)
        if isinstance(out, dict):
            return out
        return dict(zip(("image_features", "text_features", "logit_scale", "logit_bias"), out))

    def accumulated_backward(
        self,
        images: Tensor,
        tokens: Tensor,
        accum_freq: int | None = None,
        where: str | Callable[[], str] = "",
    ) -> Tensor:
        r"""Backward of the whole batch's contrastive loss through ``accum_freq`` micro-batches.

        The features :math:`u_i, v_i` of every micro-batch are computed without gradients;
        then each micro-batch :math:`j` is recomputed with gradients (same RNG state, so
        dropout draws the same masks) and the loss of the *whole* batch, with the others'
        features held fixed, is back-propagated. Since :math:`L` depends on the parameters
        through every micro-batch's features and the logit scale :math:`s`,

        .. math::
            \nabla_\theta L = \sum_j \Big(\frac{\partial (u, v)_j}{\partial \theta}\Big)^{\top}
            \frac{\partial L}{\partial (u, v)_j} + \frac{\partial L}{\partial s}\,
            \nabla_\theta s,

        the summed gradients equal the whole batch's; the logit scale (and bias) take their
        direct gradient once (open_clip's loop adds it ``accum_freq`` times). Under DDP the
        loss gathers every process's features as in one big batch. BatchNorm towers see
        micro-batch statistics (not exact for them, as in open_clip).

        Args:
            images: ``(B, 3, H, W)`` with ``B`` divisible by ``accum_freq``.
            tokens: ``(B, S)``.
            accum_freq: micro-batches (default: the ``accum_freq`` hyperparameter).
            where: what the batch is, for the non-finite-loss error (a callable is only
                called when that error is raised, so it may read device tensors).

        Returns:
            the whole batch's loss (detached), as :meth:`contrastive_loss` returns it.

        Example:
            >>> from lico_lightning.text import tiny_openclip_config
            >>> module = CLIPFineTuner(model_cfg=tiny_openclip_config(context_length=16))
            >>> images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
            >>> tokens = module.tokenize(["a cat", "a dog", "a red circle", "two birds"])
            >>> loss = module.accumulated_backward(images, tokens, accum_freq=2)
            >>> bool(torch.isclose(loss, module.contrastive_loss(images, tokens).detach()))
            True
        """
        k = self._hp.accum_freq if accum_freq is None else check_int("accum_freq", accum_freq, 1)
        self._check_batch(images, tokens)
        if images.shape[0] % k:
            raise ValueError(
                f"Expected a batch size divisible by accum_freq={k}, but got {images.shape[0]}."
            )
        chunks = list(zip(images.chunk(k), tokens.chunk(k)))
        devices = [images.device] if images.device.type == "cuda" else []
        states, cached = [], []
        with torch.no_grad():
            for im, tok in chunks:
                states.append(_rng_state(images.device))
                cached.append(self._model_outputs(im, tok))
        loss = images.new_zeros(())
        for j, (im, tok) in enumerate(chunks):
            with torch.random.fork_rng(devices=devices):
                _set_rng_state(states[j], images.device)
                fresh = self._model_outputs(im, tok)
            inputs = {
                key: torch.cat([fresh[key] if i == j else cached[i][key] for i in range(k)])
                for key in ("image_features", "text_features")
            }
            for key in ("logit_scale", "logit_bias"):  # their direct gradient once, not k times
                value = fresh.get(key)
                if value is not None:
                    inputs[key] = value if j == k - 1 else value.detach()
            loss = self.loss_fn(**inputs)
            if j == 0:
                self._check_finite(loss, where)
            if self._trainer is not None:
                self.manual_backward(loss)
            else:
                loss.backward()
        return loss.detach()

    def _check_finite(self, loss: Tensor, where: str | Callable[[], str]) -> None:
        if self._hp.check_finite_loss and not bool(torch.isfinite(loss)):
            step = self.global_step if self._trainer is not None else 0
            where = where() if callable(where) else where
            raise FloatingPointError(
                f"Expected a finite training loss, but got {float(loss)} at step {step} "
                f"({where}); the optimizer step was not taken. Look for NaN/Inf pixels or a "
                "diverging learning rate (check_finite_loss=False turns this check off)."
            )

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        images, tokens = batch[0], batch[1]

        # built only for the error: `.tolist()` on device indices is a host sync every step
        def where() -> str:
            return f"samples {batch[2].tolist()}" if len(batch) > 2 else f"batch {batch_idx}"

        if self.automatic_optimization:
            loss = self.contrastive_loss(images, tokens)
            self._check_finite(loss, where)
        else:  # contrastive accumulation: the backward passes happen in here
            optimizer = cast(Any, self.optimizers())
            scheduler = cast(Any, self.lr_schedulers())
            loss = self.accumulated_backward(images, tokens, where=where)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            self._clamp_logit_scale()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/logit_scale", self.model.logit_scale.detach().exp().float())
        return loss

    def _clamp_logit_scale(self) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0.0, LOGIT_SCALE_MAX)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> Any:
        out = super().optimizer_step(*args, **kwargs)
        self._clamp_logit_scale()
        return out

    def configure_optimizers(self) -> Any:
        hp = self._hp
        with self._full_parameters():  # FSDP: the no-decay rule reads the unflattened shapes
            groups = clip_param_groups(
                self.model,
                hp.weight_decay,
                image_lr=hp.image_lr,
                text_lr=hp.text_lr,
                logit_scale_lr=hp.logit_scale_lr,
                image_weight_decay=hp.image_weight_decay,
                text_weight_decay=hp.text_weight_decay,
            )
        groups = [g for g in groups if g["params"]]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        factor = warmup_cosine_lambda(hp.warmup_steps, total, hp.lr_schedule)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # ------------------------------------------------------------------ LoRA checkpoints
    def _frozen_state(self) -> dict[str, Tensor]:
        """The module's state entries that LoRA freezes (all but the adapters)."""
        adapters = lora_state_dict(self.state_dict())
        return {k: v for k, v in self.state_dict().items() if k not in adapters}

    def _base_fingerprint(self) -> Tensor:
        frozen = nn.Module()  # the frozen tensors, in order, as LICO fingerprints its encoder
        for i, value in enumerate(self._frozen_state().values()):
            frozen.register_buffer(f"t{i}", value)
        return _fingerprint(frozen)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """With LoRA: keep only the adapters, plus a fingerprint of the frozen base."""
        super().on_save_checkpoint(checkpoint)  # records the class (modules/_checkpoint.py)
        if self._hp.lora_rank is None:
            return
        checkpoint["state_dict"] = lora_state_dict(checkpoint["state_dict"])
        checkpoint["lora_base_fingerprint"] = self._base_fingerprint()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The logit scale / bias in this module's shape (1-element under FSDP, else as built);
        with LoRA: check the rebuilt frozen base against the fingerprint, then complete the
        adapters-only state dict with it (so a strict load works)."""
        state = checkpoint.get("state_dict", {})
        for name in ("logit_scale", "logit_bias"):  # 1-element under FSDP (`_prepare_fsdp`)
            param, key = getattr(self.model, name, None), f"model.{name}"
            if isinstance(param, Tensor) and key in state and state[key].numel() == 1:
                shape = (1,) if name in self._made_1d else tuple(param.shape)
                state[key] = state[key].reshape(shape)
        saved = checkpoint.get("lora_base_fingerprint")
        if saved is None or self._hp.lora_rank is None:
            return
        if not torch.equal(saved.to(torch.float64), self._base_fingerprint()):
            raise ValueError(
                "Expected the frozen base rebuilt from the checkpoint's hyperparameters "
                f"(model_name={self._hp.model_name!r}, pretrained={self._hp.pretrained!r}, "
                "model_cfg) to match the base the LoRA adapters were trained on, but got "
                "different weights (LoRA checkpoints store only the adapters); load it with the "
                "same pretrained weights."
            )
        checkpoint["state_dict"] = {**self._frozen_state(), **checkpoint["state_dict"]}

    # ------------------------------------------------------------------ evaluation
    def _class_names(self) -> list[str] | None:
        if self._hp.class_names is not None:
            return list(self._hp.class_names)
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(dm, "class_names", None)
        return None if names is None else list(names)

    def _eval_start(self, stage: str) -> None:
        self._eval = {"image": [], "text": [], "index": [], "tokens": []}
        self._zeroshot = None
        names = self._class_names()
        if names:
            from torchmetrics.classification import MulticlassAccuracy

            templates = [t.format for t in self._hp.zeroshot_templates]
            with torch.no_grad(), self._full_parameters():  # every rank: a collective
                self._zeroshot = open_clip_helpers.build_zero_shot_classifier(
                    self.model, self.tokenize, names, templates, device=self.device
                )
            self.zeroshot_acc[stage] = MulticlassAccuracy(
                num_classes=len(names), average="micro"
            ).to(self.device)

    def _eval_step(self, batch: Sequence[Tensor], stage: str, dataloader_idx: int) -> None:
        if dataloader_idx == 1:  # zero-shot classification loader
            if self._zeroshot is None:
                raise ValueError(
                    "Expected class names for the zero-shot loader (data module `class_names` or "
                    "`class_names=`), but got none."
                )
            images, targets = batch[0], batch[1]
            features = self.model.encode_image(images, normalize=True)
            metric: Any = self.zeroshot_acc[stage]
            metric.update(features @ self._zeroshot, targets)
            self.log(f"{stage}/zeroshot_acc", metric, add_dataloader_idx=False)
            return
        images, tokens, index = batch[0], batch[1], batch[2]
        self._check_batch(images, tokens)
        out = self.model(images, tokens)
        out = (
            out
            if isinstance(out, dict)
            else dict(zip(("image_features", "text_features", "logit_scale", "logit_bias"), out))
        )
        loss = CLIP_LOSSES.create(self._hp.loss, 0, 1)(**out)
        self.log(f"{stage}/loss", loss, sync_dist=True, add_dataloader_idx=False)
        self._eval["image"].append(out["image_features"].float())
        self._eval["text"].append(out["text_features"].float())
        self._eval["index"].append(index.long())
        self._eval["tokens"].append(tokens.long())

    def _gathered(self, stage: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Every process's eval pairs, without the samples a DistributedSampler pads in.

        Padding is found by position, not content (two captions of one image that tokenise
        alike are two queries): the sampler gives rank ``r`` the positions ``r, r + W, ...`` of
        the padded order, so row ``j`` of rank ``r`` is padding when ``j·W + r ≥ N``.
        """
        parts = [torch.cat(self._eval[k]) for k in ("image", "text", "index", "tokens")]
        world = 1 if self._trainer is None else int(self.trainer.world_size)
        if world == 1:
            image, text, index, tokens = parts
            return image, text, index, tokens
        keep = unpadded_order(parts[0].shape[0], world, self._eval_dataset_length(stage))
        parts = [cast(Tensor, self.all_gather(p)).flatten(0, 1) for p in parts]
        image, text, index, tokens = (p[keep.to(p.device)] for p in parts)
        return image, text, index, tokens

    def _eval_dataset_length(self, stage: str) -> int:
        loaders = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        dataset = getattr(loader, "dataset", None)
        if dataset is None:
            raise ValueError(
                f"Expected the {stage} dataloader to have a sized dataset (to drop the samples "
                "a DistributedSampler pads in), but it has none."
            )
        return len(dataset)

    def _eval_end(self, stage: str) -> None:
        if not self._eval or not self._eval["image"]:
            return
        image, text, index, _ = self._gathered(stage)
        ids, pos = first_occurrences(index)
        image = image[pos]  # one embedding per image
        results = {}
        for name, queries, items, relevant_of in (
            ("i2t", image, text, lambda rows: ids[rows, None] == index[None, :]),
            ("t2i", text, image, lambda rows: index[rows, None] == ids[None, :]),
        ):
            metric = RetrievalRecallAtK(k=self.retrieval_k, sync_on_compute=False).to(image.device)
            for start in range(0, queries.shape[0], 1024):
                rows = torch.arange(start, min(start + 1024, queries.shape[0]), device=image.device)
                metric.update(queries[rows] @ items.T, relevant_of(rows))
            # (len(k),); torchmetrics squeezes a one-element result to 0-d
            for k, value in zip(self.retrieval_k, metric.compute().reshape(-1)):
                results[f"{stage}/{name}_R@{k}"] = value
        if 1 in self.retrieval_k:
            results[f"{stage}/R@1"] = (
                results[f"{stage}/i2t_R@1"] + results[f"{stage}/t2i_R@1"]
            ) / 2
        # identical on every rank (computed from gathered embeddings): no further sync
        self.log_dict(results, rank_zero_only=False, add_dataloader_idx=False)
        self._eval = {}

    def on_validation_epoch_start(self) -> None:
        self._eval_start("val")

    def validation_step(
        self, batch: Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_step(batch, "val", dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_start("test")

    def test_step(self, batch: Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    # ------------------------------------------------------------------ export
    def initial_model(self) -> nn.Module:
        """The model as built from the hyperparameters (the pretrained weights) — WiSE-FT's θ₀."""
        hp = self._hp
        if hp.pretrained is None:
            raise ValueError(
                "Expected `pretrained` weights to interpolate with (WiSE-FT), but got "
                "pretrained=None: a model trained from scratch has no initial weights to keep."
            )
        return open_clip_helpers.build_model(
            hp.model_name,
            hp.pretrained,
            hp.model_cfg,
            patch_dropout=hp.patch_dropout,
            cache_dir=hp.cache_dir,
        )

    def plain_state_dict(self) -> dict[str, Tensor]:
        """The model's plain open_clip state dict on the CPU (LoRA adapters merged into their
        weights: :math:`W + \\tfrac{\\alpha}{r} BA`). Under FSDP the whole parameters are
        gathered first: a collective, call it on every rank."""
        with self._full_parameters():
            if self._hp.lora_rank is not None:
                state = merged_state_dict(self.model)
            else:
                state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            if self._trainer is not None and isinstance(self.trainer.strategy, FSDPStrategy):
                state = {k: v.clone() for k, v in state.items()}  # gathered: freed on exit
        # the logit scale / bias 0-d again where `_prepare_fsdp` made them 1-element
        return {k: v.reshape(()) if k in self._made_1d else v for k, v in state.items()}

    def wise_ft_state_dict(self, alpha: float) -> dict[str, Tensor]:
        """WiSE-FT: :math:`\\theta = (1 - \\alpha)\\,\\theta_0 + \\alpha\\,\\theta_{ft}` per tensor.

        ``alpha = 1`` is the fine-tuned model, ``0`` the initial (pretrained) one; floating
        tensors are interpolated, others (e.g. integer buffers) taken from the fine-tuned model.
        """
        check_real("alpha", alpha)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Expected `alpha` in [0, 1], but got {alpha!r}.")
        theta0 = self.initial_model().state_dict()
        out = {}
        for name, value in self.plain_state_dict().items():
            value = value.detach().cpu()
            base = theta0[name].to(value.dtype)
            out[name] = (
                (1 - alpha) * base + alpha * value if value.is_floating_point() else value.clone()
            )
        return out

    def export_open_clip(self, path: str | Path, wise_ft_alpha: float | None = None) -> Path:
        """Write the model's plain open_clip state dict (WiSE-FT-interpolated with an alpha).

        Load it with ``open_clip.create_model(model_name, pretrained=str(path))``. A model built
        from ``model_cfg`` also gets its config written as ``path.with_suffix(".json")``: load
        it with ``open_clip.add_model_config(json_path)`` and
        ``open_clip.create_model(path.stem, pretrained=str(path))``.
        """
        path = Path(path)
        if wise_ft_alpha is None:
            state = self.plain_state_dict()
        else:
            state = self.wise_ft_state_dict(wise_ft_alpha)
        save_torch(state, path)  # whole or not at all
        if self._hp.model_cfg is not None:
            write_text(path.with_suffix(".json"), json.dumps(self._hp.model_cfg, indent=2))
        return path
