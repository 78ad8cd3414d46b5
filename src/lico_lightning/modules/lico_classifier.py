"""LICO image classifier: cross-entropy plus language-image consistency losses."""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.seed import isolate_rng
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lico_lightning._validation import check_choice, check_positive, check_tensor
from lico_lightning.losses import (
    EXPLANATION_LOSSES,
    ExplanationLoss,
    ManifoldMatchingLoss,
    SinkhornOTLoss,
)
from lico_lightning.models import create_backbone
from lico_lightning.modules._checkpoint import CheckpointOwner
from lico_lightning.text import MappingNet, PromptLearner, TextEncoder, create_text_encoder

__all__ = ["LICOClassifier", "lico_cosine_lambda"]


def _rng_states() -> dict[str, Any]:
    """Global RNG states as plain tensors/tuples (loadable with ``torch.load(weights_only=True)``).

    Not a copy of Lightning's ``isolate_rng`` (used for the sanity check below): these states
    go *into checkpoints* for exact resume, where Lightning's private ``_collect_rng_states``
    would store numpy arrays that ``weights_only=True`` refuses.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global state is the point)
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


_SCHEDULES = ("cosine_7_16", "constant")
_ENCODER_KEY = "prompt_learner.text_encoder."


def _fingerprint(module: nn.Module) -> Tensor:
    """Per-tensor (sum, sum of squares) in float64: detects a rebuilt encoder that differs."""
    rows = [
        torch.stack([t.detach().double().sum(), t.detach().double().square().sum()]).cpu()
        for t in module.state_dict().values()
        if torch.is_floating_point(t)
    ]
    return torch.stack(rows) if rows else torch.zeros(0, 2, dtype=torch.float64)


def lico_cosine_lambda(total_steps: int) -> Any:
    r"""Per-step learning-rate factor of the LICO paper (§4.2): :math:`\cos(7\pi k / 16K)`.

    Args:
        total_steps: K, the total number of optimizer steps of the run.

    Returns:
        A function ``k -> factor`` for :class:`torch.optim.lr_scheduler.LambdaLR`. The factor
        decays from 1 at ``k = 0`` to :math:`\cos(7\pi/16) \approx 0.195` at ``k = K``.

    Example:
        >>> f = lico_cosine_lambda(100)
        >>> round(f(0), 3), round(f(100), 3)
        (1.0, 0.195)
    """
    check_positive("total_steps", total_steps)

    def factor(step: int) -> float:
        return math.cos(7.0 * math.pi * min(step, total_steps) / (16.0 * total_steps))

    return factor


def _drop_frozen_state(
    module: LICOClassifier, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    """``state_dict`` post-hook: leave the frozen text encoder out (rebuilt on load)."""
    if module.text_encoder is not None:
        for key in module.text_encoder.state_dict():
            state_dict.pop(f"{prefix}{_ENCODER_KEY}{key}", None)


def _fill_frozen_state(
    module: LICOClassifier, state_dict: dict[str, Any], prefix: str, *_: Any
) -> None:
    """``load_state_dict`` pre-hook: take the frozen encoder's tensors from the rebuilt one."""
    if module.text_encoder is not None:
        for key, value in module.text_encoder.state_dict(keep_vars=True).items():
            state_dict.setdefault(f"{prefix}{_ENCODER_KEY}{key}", value)


def _build_explanation_losses(
    specs: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, ExplanationLoss]:
    """``{"rrr": {"weight": 10.0}}`` -> ``{"rrr": RightForTheRightReasonsLoss(weight=10.0)}``."""
    if specs is None:
        return {}
    if not isinstance(specs, Mapping):
        raise TypeError(
            "Expected `explanation_losses` to be a mapping {name: {option: value}}, e.g. "
            f'{{"rrr": {{"weight": 10.0}}}}, but got {type(specs).__name__}.'
        )
    EXPLANATION_LOSSES.check_names(list(specs))
    losses = {}
    for name, options in specs.items():
        options = {} if options is None else options
        if not isinstance(options, Mapping):
            raise TypeError(
                f"Expected the options of explanation loss {name!r} to be a mapping, but got "
                f"{type(options).__name__}."
            )
        accepted = sorted(inspect.signature(EXPLANATION_LOSSES.get(name)).parameters)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(
                f"Expected options of explanation loss {name!r} among {accepted}, but got "
                f"{unknown}."
            )
        losses[name] = EXPLANATION_LOSSES.create(name, **options)
    return losses


def _check_ground_truth(
    losses: Mapping[str, ExplanationLoss], ground_truth: Mapping[str, Any] | None
) -> None:
    """Fail before the forward pass when a batch lacks a mask an explanation loss needs."""
    for name, loss in losses.items():
        missing = loss.missing_keys(ground_truth)
        if missing:
            got = "no ground-truth dict" if ground_truth is None else f"keys {sorted(ground_truth)}"
            raise ValueError(
                f"Expected batches with a ground-truth dict holding {list(loss.mask_keys)} for "
                f"explanation loss {name!r} (the regions that must not matter; e.g. "
                f"ShortcutDataModule batches), but got {got}: missing {missing}."
            )


class LICOClassifier(CheckpointOwner, family=True):
    r"""Image classifier trained with cross-entropy plus pluggable explanation losses: LICO
    (Lei et al., NeurIPS 2023), Right for the Right Reasons, a Grad-CAM mask penalty.

    .. math::

        \mathcal{L} = \mathcal{L}_{CE} + \alpha\,\mathcal{L}_{MM}(F, G) + \beta\,\mathcal{L}_{OT}(F, G)
            + \sum_{e \in \text{explanation\_losses}} \mathcal{R}_e,
        \qquad G_i = h_\psi(g_\phi(t_{y_i}))

    **Choosing the terms.** LICO's MM and OT terms are one family, weighted by ``alpha`` and
    ``beta``; ``explanation_losses`` adds the mask-guided ones by name
    (:data:`lico_lightning.losses.EXPLANATION_LOSSES`: ``"rrr"``
    :class:`~lico_lightning.losses.RightForTheRightReasonsLoss`, ``"gradcam_mask"``
    :class:`~lico_lightning.losses.GradCAMMaskLoss`), each with its options (``weight`` is its
    λ). CE: ``alpha=0, beta=0``; LICO: the defaults; RRR: ``alpha=0, beta=0,
    explanation_losses={"rrr": {"weight": 10.0}}``; LICO + RRR: the defaults plus
    ``explanation_losses={"rrr": {...}}``. The mask-guided losses read their masks
    (``mask_keys``, by default ``cue_mask | distractor_mask``) from the ground-truth dict that
    ends each batch of :class:`~lico_lightning.data.ShortcutDataModule`; a batch without them
    raises before the first forward pass, naming the loss and the missing key. They are
    training terms (they need gradients): validation and test log CE / MM / OT only. They hold
    no parameters, so a model's ``state_dict`` keys are those of the same model without them.

    ``F_i`` (N × L) is the last feature map of the backbone with its spatial part flattened
    (L = H·W); ``t_y`` is the learnable prompt of class ``y`` (context tokens + class name),
    ``g_phi`` the **frozen** text encoder returning one feature per prompt token and ``h_psi``
    the mapping MLP to L dimensions. Only the prompts of the classes present in the batch are
    encoded. ``alpha = beta = 0`` is the plain cross-entropy baseline (the text side is then
    not built at all).

    Training-only parts (text encoder, prompts, ``h_psi``, the MM temperature) are dropped by
    :meth:`export_classifier`, which returns the plain backbone classifier.

    **Checkpoints** (and ``state_dict()``) leave out the frozen text encoder: it is rebuilt
    from ``text_encoder`` / ``text_encoder_kwargs`` (under a fixed seed, so randomly
    initialised towers come out identical) and a fingerprint of its weights, stored in the
    checkpoint, must match on load. A resumed fit keeps K of the cos(7πk/16K) schedule from
    the checkpoint and warns when the trainer would plan another K.

    Args:
        class_names: one name per class, in label order (e.g. from the data module).
        backbone: registered backbone name (see :func:`lico_lightning.models.list_backbones`).
        backbone_kwargs: extra keyword arguments for the backbone factory.
        image_size: input side length, used to size ``h_psi`` (L of the feature map).
        text_encoder: registered text encoder name
            (see :func:`lico_lightning.text.list_text_encoders`).
        text_encoder_kwargs: extra keyword arguments for the text encoder factory.
        n_ctx: number of learnable context tokens (paper: 12).
        ctx_init: optional words to initialise the context from, e.g. ``"a type of aircraft"``.
        class_specific_context: one context per class instead of a shared one.
        dynamic_context: shuffle the context tokens at every training step (Algorithm 1).
        learnable_context: ``False`` freezes the context (Appendix G ablations).
        prompt_tokens: which per-token text features form ``G_i`` (see :class:`PromptLearner`):
            the paper's ``G_i = [g_1..g_{M-1}, g_t]`` is ``"context+class"``.
        class_pool: how the class-name token features are pooled into ``g_t``.
        mapping_hidden_dim: hidden units of ``h_psi`` (paper: 512).
        mapping_dropout: dropout of ``h_psi``.
        alpha: weight of the manifold-matching loss (paper: 10).
        beta: weight of the optimal-transport loss (paper: 1).
        mm_distance: ``"euclidean"`` (paper default) or ``"cosine"`` (Table 7).
        mm_kwargs: extra keyword arguments for :class:`ManifoldMatchingLoss`. The MM
            temperature is **fixed** at τ = 0.07 by default (``learn_temperature=False``):
            learned on the same KL, τ only flattens both adjacencies and runs to its upper
            clamp (measured on digits: 0.07 → 0.45 in 15 steps while the MM term fell 40×;
            see the README's troubleshooting). ``mm_kwargs={"learn_temperature": True}``
            learns it as the paper does; ``train/mm_temperature`` is logged either way.
        ot_epsilon: entropic regularisation of the Sinkhorn solver.
        ot_max_iter: Sinkhorn iterations.
        lr: initial learning rate (paper: 0.03).
        momentum: SGD momentum (paper: 0.9).
        weight_decay: SGD weight decay (paper: 1e-4); not applied to the MM temperature.
        nesterov: Nesterov momentum.
        lr_schedule: ``"cosine_7_16"`` (paper, per step) or ``"constant"``.
        explanation_losses: mask-guided explanation losses by registered name, each with its
            keyword options, e.g. ``{"rrr": {"weight": 10.0}, "gradcam_mask": {"weight": 1.0}}``.
        resume_rng_state: store the global RNG states (torch, CUDA, numpy, python) in
            checkpoints and restore them when a fit resumes (and keep the sanity check from
            consuming them), so that a run resumed from an epoch-end checkpoint continues
            exactly: same dropout masks and augmentation draws (with ``num_workers=0``;
            worker processes derive their seeds from it too). Data order comes from the data
            module's epoch-seeded sampler.

    Example:
        >>> from lico_lightning.text import tiny_openclip_config
        >>> model = LICOClassifier(
        ...     ["cat", "dog", "sea turtle"], backbone="wrn28_2", backbone_kwargs={"depth": 10},
        ...     image_size=16, text_encoder="openclip", n_ctx=4,
        ...     text_encoder_kwargs={"model_cfg": tiny_openclip_config()})
        >>> out = model.lico_losses(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 1]))
        >>> sorted(out), out["logits"].shape
        (['ce', 'logits', 'loss', 'mm', 'ot'], torch.Size([4, 3]))
        >>> classifier = model.export_classifier()  # plain backbone, no LICO parts
        >>> classifier(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: str = "wrn28_2",
        backbone_kwargs: dict[str, Any] | None = None,
        image_size: int = 32,
        text_encoder: str = "minilm",
        text_encoder_kwargs: dict[str, Any] | None = None,
        n_ctx: int = 12,
        ctx_init: str | None = None,
        class_specific_context: bool = False,
        dynamic_context: bool = True,
        learnable_context: bool = True,
        prompt_tokens: Literal[
            "context+class", "context+class+eot", "context+eot"
        ] = "context+class",
        class_pool: Literal["mean", "last"] = "mean",
        mapping_hidden_dim: int = 512,
        mapping_dropout: float = 0.5,
        alpha: float = 10.0,
        beta: float = 1.0,
        mm_distance: Literal["euclidean", "cosine"] = "euclidean",
        mm_kwargs: dict[str, Any] | None = None,
        ot_epsilon: float = 0.1,
        ot_max_iter: int = 100,
        lr: float = 0.03,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        nesterov: bool = False,
        lr_schedule: Literal["cosine_7_16", "constant"] = "cosine_7_16",
        resume_rng_state: bool = True,
        explanation_losses: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        class_names = list(class_names)
        if not class_names or not all(isinstance(c, str) for c in class_names):
            raise ValueError(
                f"Expected `class_names` to be a non-empty list of strings, but got {class_names!r}."
            )
        for name, value in (("alpha", alpha), ("beta", beta), ("weight_decay", weight_decay)):
            check_positive(name, value, strict=False)
        check_positive("lr", lr)
        check_positive("image_size", image_size)
        check_choice("lr_schedule", lr_schedule, _SCHEDULES)
        guided = _build_explanation_losses(explanation_losses)
        self.save_hyperparameters()

        num_classes = len(class_names)
        self.class_names = class_names
        self.backbone = create_backbone(
            backbone, num_classes=num_classes, **(backbone_kwargs or {})
        )
        self.uses_text = alpha > 0 or beta > 0

        self.prompt_learner: PromptLearner | None = None
        self.mapping: MappingNet | None = None
        self.mm_loss: ManifoldMatchingLoss | None = None
        self.ot_loss: SinkhornOTLoss | None = None
        if self.uses_text:
            n_maps, length = self.backbone.feature_shape(image_size)
            # Built from the hyperparameters alone, under a fixed seed: randomly initialised
            # towers (tests, `pretrained=None`) come out identical on every load, so the
            # frozen weights need not be checkpointed, and the caller's RNG is not consumed.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                encoder = create_text_encoder(text_encoder, **(text_encoder_kwargs or {}))
            self.prompt_learner = PromptLearner(
                class_names,
                encoder,
                n_ctx=n_ctx,
                ctx_init=ctx_init,
                class_specific=class_specific_context,
                dynamic_context=dynamic_context,
                learnable_ctx=learnable_context,
                tokens=prompt_tokens,
                class_pool=class_pool,
            )
            self.mapping = MappingNet(
                encoder.output_dim, length, hidden_dim=mapping_hidden_dim, dropout=mapping_dropout
            )
            mm_options = {"learn_temperature": False, **(mm_kwargs or {})}
            allowed = sorted(inspect.signature(ManifoldMatchingLoss).parameters)
            unknown = sorted(set(mm_options) - set(allowed) | ({"distance"} & set(mm_options)))
            if unknown:
                raise ValueError(
                    f"Expected `mm_kwargs` keys among {[a for a in allowed if a != 'distance']} "
                    f"(`distance` is `mm_distance`), but got {unknown}."
                )
            self.mm_loss = ManifoldMatchingLoss(distance=mm_distance, **mm_options)
            self.ot_loss = SinkhornOTLoss(epsilon=ot_epsilon, max_iter=ot_max_iter)
            self._feature_shape = (n_maps, length)

        # Parameter-free modules: no state_dict keys (LICO checkpoints are unchanged).
        self.explanation_losses = nn.ModuleDict(guided)
        top5 = min(5, num_classes)
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.test_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self._sanity_rng: contextlib.ExitStack | None = None
        self._total_steps: int | None = None  # K of the cos(7πk/16K) schedule, checkpointed
        self._loaded_total_steps: int | None = None
        self._warned_small_batch = False
        # Frozen text-encoder weights stay out of every state_dict (checkpoints included) and
        # are filled back in from the rebuilt encoder on load.
        self.register_state_dict_post_hook(_drop_frozen_state)
        self.register_load_state_dict_pre_hook(_fill_frozen_state)

    # ------------------------------------------------------------------ slim checkpoints
    @property
    def text_encoder(self) -> TextEncoder | None:
        """The frozen text encoder ``g_phi`` (``None`` for the CE baseline)."""
        return None if self.prompt_learner is None else self.prompt_learner.text_encoder

    # ------------------------------------------------------------------ inference
    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, 3, H, W)``."""
        return self.backbone(images)

    def export_classifier(self) -> nn.Module:
        """A copy of the trained backbone classifier (no text encoder, prompts or ``h_psi``)."""
        return copy.deepcopy(self.backbone).eval()

    # ------------------------------------------------------------------ losses
    def lico_losses(
        self,
        images: Tensor,
        targets: Tensor,
        ground_truth: Mapping[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """Forward pass and all loss terms for a batch.

        Args:
            images: ``(B, C, H, W)``.
            targets: ``(B,)`` long.
            ground_truth: the batch's ground-truth dict (masks ``(B, H, W)``), needed by the
                ``explanation_losses`` when grad is enabled (they are skipped without grad,
                e.g. in validation).

        Returns:
            dict with ``logits`` (B, num_classes), ``ce``, ``mm``, ``ot``, one entry per
            explanation loss (weighted, when computed) and the weighted ``loss`` (scalars).
        """
        check_tensor("images", images, floating=True, nonempty=False)
        check_tensor("targets", targets, nonempty=False)
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(
                f"Expected a non-empty image batch of shape (B, C, H, W), but got {tuple(images.shape)}."
            )
        if targets.shape != (images.shape[0],) or targets.dtype != torch.long:
            raise ValueError(
                f"Expected long targets of shape ({images.shape[0]},), but got "
                f"{targets.dtype} of shape {tuple(targets.shape)}."
            )
        n_cls = len(self.class_names)
        if bool(((targets < 0) | (targets >= n_cls)).any()):  # one host sync
            raise ValueError(
                f"Expected targets in [0, {n_cls}), but got values "
                f"{sorted(set(targets.tolist()) - set(range(n_cls)))}."
            )
        guided: dict[str, ExplanationLoss] = (
            {n: cast(ExplanationLoss, m) for n, m in self.explanation_losses.items()}
            if torch.is_grad_enabled()
            else {}
        )
        if guided:
            _check_ground_truth(guided, ground_truth)
            if any(loss.requires_input_grad for loss in guided.values()):
                images = images.detach().requires_grad_(True)
        fmap = self.backbone.forward_features(images)
        logits = self.backbone.forward_head(fmap)
        ce = F.cross_entropy(logits, targets)
        zero = ce.new_zeros(())
        out = {"logits": logits, "ce": ce, "mm": zero, "ot": zero}
        if self.uses_text and images.shape[0] >= 2:
            feats = fmap.flatten(2)  # (B, N, L)
            if feats.shape[-1] != self._feature_shape[1]:
                raise ValueError(
                    f"Expected backbone feature maps with {self._feature_shape[1]} positions "
                    f"(image_size={self.hparams['image_size']}), but got {feats.shape[-1]} for input "
                    f"{tuple(images.shape[-2:])}; set `image_size` to the training resolution."
                )
            prompts, mapping, mm_loss, ot_loss = self._text_modules()
            text = mapping(prompts(targets))  # (B, M, L)
            if self.hparams["alpha"] > 0:
                out["mm"] = mm_loss(feats, text)
            if self.hparams["beta"] > 0:
                out["ot"] = ot_loss(feats, text)
        elif self.uses_text and not self._warned_small_batch:
            rank_zero_warn(
                "LICO losses need at least 2 samples per batch (the manifold-matching loss "
                "compares samples within the batch); a batch of 1 was trained with CE only. "
                "Use drop_last=True for the training dataloader to avoid this."
            )
            self._warned_small_batch = True
        out["loss"] = ce + self.hparams["alpha"] * out["mm"] + self.hparams["beta"] * out["ot"]
        if guided and ground_truth is not None:
            for name, loss in guided.items():
                mask = loss.mask(ground_truth).to(images.device)
                out[name] = loss.penalty(images, logits, fmap, targets, mask)
                out["loss"] = out["loss"] + out[name]
        return out

    def _text_modules(
        self,
    ) -> tuple[PromptLearner, MappingNet, ManifoldMatchingLoss, SinkhornOTLoss]:
        """The text side, built together in ``__init__`` when ``alpha > 0 or beta > 0``."""
        prompts, mapping, mm_loss, ot_loss = (
            self.prompt_learner,
            self.mapping,
            self.mm_loss,
            self.ot_loss,
        )
        if prompts is None or mapping is None or mm_loss is None or ot_loss is None:
            raise RuntimeError(  # pragma: no cover - uses_text builds all four
                "Expected the text-side modules of a LICO model (alpha > 0 or beta > 0), but "
                "got a model built without them."
            )
        return prompts, mapping, mm_loss, ot_loss

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        images, targets = batch[0], batch[1]
        ground_truth = batch[-1] if isinstance(batch[-1], Mapping) else None
        out = self.lico_losses(images, targets, ground_truth)
        loss = out["loss"]
        if not torch.isfinite(loss):
            terms = ", ".join(
                f"{k}={out[k].item()}" for k in ("ce", "mm", "ot", *self.explanation_losses)
            )
            raise FloatingPointError(
                f"Expected a finite training loss, but got {terms} at step {self.global_step}."
            )
        bs = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict(
            {f"train/{k}": out[k] for k in ("ce", "mm", "ot")}, batch_size=bs, prog_bar=False
        )
        if len(self.explanation_losses):
            self.log_dict({f"train/{k}": out[k] for k in self.explanation_losses}, batch_size=bs)
        if self.mm_loss is not None:
            self.log("train/mm_temperature", self.mm_loss.temperature.detach(), batch_size=bs)
        return loss

    def _eval_step(self, batch: Sequence[Tensor], stage: str) -> None:
        images, targets = batch[0], batch[1]
        out = self.lico_losses(images, targets)
        bs = images.shape[0]
        top1 = self.val_top1 if stage == "val" else self.test_top1
        top5 = self.val_top5 if stage == "val" else self.test_top5
        top1(out["logits"], targets)
        top5(out["logits"], targets)
        self.log_dict(
            {f"{stage}/{k}": out[k] for k in ("loss", "ce", "mm", "ot")},
            batch_size=bs,
            sync_dist=True,
        )
        self.log(f"{stage}/acc", top1, prog_bar=True, batch_size=bs)
        self.log(f"{stage}/acc_top5", top5, batch_size=bs)

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images).softmax(dim=-1)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        no_decay = [p for p in self.mm_loss.parameters()] if self.mm_loss is not None else []
        no_decay_ids = {id(p) for p in no_decay}
        decay = [p for p in self.parameters() if p.requires_grad and id(p) not in no_decay_ids]
        groups = [{"params": decay, "weight_decay": hp["weight_decay"]}]
        trainable_no_decay = [p for p in no_decay if p.requires_grad]
        if trainable_no_decay:
            groups.append({"params": trainable_no_decay, "weight_decay": 0.0})
        optimizer = torch.optim.SGD(
            groups, lr=hp["lr"], momentum=hp["momentum"], nesterov=hp["nesterov"]
        )
        if hp["lr_schedule"] == "constant":
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        loaded = self._loaded_total_steps
        if loaded is not None and int(loaded) != total:
            rank_zero_warn(
                f"Resuming a run whose cos(7πk/16K) schedule was planned for K={int(loaded)} "
                f"steps, but this trainer's max_epochs / max_steps give K={total}. Keeping "
                f"K={int(loaded)} from the checkpoint so the learning rate continues exactly "
                "(past K it stays at cos(7π/16)·lr); start a new fit to plan a longer schedule."
            )
            total = int(loaded)
        self._total_steps = total
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lico_cosine_lambda(total))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # ------------------------------------------------------------------ exact resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # records the class (modules/_checkpoint.py)
        if self.hparams["resume_rng_state"]:
            checkpoint["lico_rng_states"] = _rng_states()
        if self.text_encoder is not None:
            checkpoint["lico_text_encoder_fingerprint"] = _fingerprint(self.text_encoder)
        checkpoint["lico_total_steps"] = self._total_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Restore right away when resuming a fit: Lightning builds the training iterator (and
        # prefetches the first augmented batch) as early as configure_optimizers
        # (estimated_stepping_batches), before any fit hook runs. Plain load_from_checkpoint
        # (no trainer) leaves the caller's RNG alone.
        saved = checkpoint.get("lico_text_encoder_fingerprint")
        if saved is not None and self.text_encoder is not None:
            if not torch.equal(saved.to(torch.float64), _fingerprint(self.text_encoder)):
                raise ValueError(
                    "Expected the text encoder rebuilt from the checkpoint's hyperparameters "
                    f"(text_encoder={self.hparams['text_encoder']!r}, text_encoder_kwargs="
                    f"{self.hparams['text_encoder_kwargs']!r}) to match the frozen encoder the run "
                    "was trained with, but got different weights (checkpoints do not store the "
                    "frozen encoder); load it with the same weights files / pretrained tag."
                )
        self._loaded_total_steps = checkpoint.get("lico_total_steps")
        states = checkpoint.get("lico_rng_states")
        trainer = self._trainer
        if states is not None and trainer is not None and trainer.state.fn == TrainerFn.FITTING:
            _set_rng_states(states)

    def on_sanity_check_start(self) -> None:
        # The sanity check must not consume the global RNG, or a resumed run (which runs one)
        # would draw differently from the uninterrupted run (which does not, mid-fit).
        if self.hparams["resume_rng_state"]:
            self._sanity_rng = contextlib.ExitStack()
            self._sanity_rng.enter_context(isolate_rng(include_cuda=torch.cuda.is_available()))

    def on_sanity_check_end(self) -> None:
        if self._sanity_rng is not None:
            self._sanity_rng.close()
            self._sanity_rng = None
