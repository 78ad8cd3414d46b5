"""EXPLAIN-R: distil a frozen CLIP into a concept surrogate (Algorithm 1) as a LightningModule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lico_lightning import _open_clip as open_clip_helpers
from lico_lightning._open_clip import load_weights as load_open_clip_weights
from lico_lightning._validation import check_finite, check_int, check_real, check_tensor
from lico_lightning.concepts import ConceptExplanation, ConceptSurrogate
from lico_lightning.losses import SurrogateDistillationLoss
from lico_lightning.metrics import RetrievalFaithfulness
from lico_lightning.modules._checkpoint import CheckpointOwner

__all__ = ["SurrogateDistiller"]

_K = (1, 5, 10)
_DIRECTIONS = ("i2t", "t2i")


def _open_clip_teacher(
    model_name: str | None,
    pretrained: str | None = None,
    model_cfg: dict[str, Any] | None = None,
    checkpoint: str | Path | None = None,
) -> Any:
    """An open_clip :class:`~lico_lightning.explain.DualEncoder` (CPU; :func:`_frozen` freezes
    it), built from ``model_cfg`` or ``model_name`` + ``pretrained``, then the weights of
    ``checkpoint`` (:func:`load_open_clip_weights`) when given."""
    from lico_lightning.explain import OpenCLIPDualEncoder

    if model_cfg is None and model_name is None:
        raise ValueError("Expected `model_name` or `model_cfg`, but got neither.")
    name = model_name or ""
    model = open_clip_helpers.build_model(
        name, None if model_cfg is not None else pretrained, model_cfg
    )
    if checkpoint is not None:
        load_open_clip_weights(model, checkpoint)
    context_length = int(getattr(model, "context_length", 77))
    tokenizer = open_clip_helpers.tokenizer_for(name, model_cfg, context_length)
    return OpenCLIPDualEncoder(model, tokenizer=tokenizer)


def _frozen(teacher: Any) -> Any:
    if not all(hasattr(teacher, a) for a in ("encode_image", "encode_text", "module")):
        raise TypeError(
            "Expected `teacher` to be a DualEncoder (encode_image / encode_text / module), but "
            f"got {type(teacher).__name__}."
        )
    teacher.module.eval().requires_grad_(False)
    return teacher


class SurrogateDistiller(CheckpointOwner, family=True):
    r"""Train a concept surrogate :math:`f(c_i)` that reproduces a frozen CLIP's image–text
    similarities (EXPLAIN-R, Algorithm 1).

    .. math::

        \min_f\ \tfrac12\,\tfrac1n\sum_i \mathrm{KL}(P^e_i\|P^f_i)
              + \tfrac12\,\tfrac1n\sum_j \mathrm{KL}(Q^e_j\|Q^f_j)

    (:class:`~lico_lightning.losses.SurrogateDistillationLoss`; the moving-average estimators
    ``u``, ``v`` are buffers of that loss, so they are in checkpoints and identical on every DDP
    rank). Only the surrogate is trained, with AdamW (amsgrad, lr 1e-3, weight decay 1e-6, the
    paper's settings).

    Batches are dicts with ``"concepts"`` ``(B, C)``, ``"index"`` ``(B,)`` (dataset positions)
    and either the cached CLIP embeddings ``"image_embeds"`` / ``"text_embeds"`` ``(B, K)``
    (:class:`~lico_lightning.data.ConceptPairDataset`, the default: CLIP never runs during
    training) or ``"images"`` ``(B, C, H, W)`` / ``"tokens"`` ``(B, S)`` (online mode, e.g. with
    image augmentation), which the frozen teacher encodes at every step.

    **The teacher** (the CLIP being explained) is identified by this module's hyperparameters
    ``clip_model`` / ``clip_pretrained`` / ``clip_model_cfg`` / ``clip_checkpoint`` and built,
    frozen, on first use (:meth:`teacher`); a built
    :class:`~lico_lightning.explain.DualEncoder` can be passed as ``teacher`` instead. It is a
    plain attribute: never in the optimizer or the checkpoint (a checkpoint's hyperparameters
    rebuild it). A :class:`~lico_lightning.data.ConceptDistillationDataModule` without a
    teacher of its own caches the embeddings of this one, so the teacher is named once.

    Logged: ``train/loss``, ``train/kl`` (the naive in-batch KL, always), ``train/top1_agreement``;
    in validation ``val/kl``, ``val/top1_agreement`` and the R@K of retrieval faithfulness
    (``val/faithfulness_{i2t,t2i}_r{1,5,10}``, CLIP's own top-1 as ground truth) and
    performance (``val/performance_...``, the dataset pairing), on consecutive blocks of
    ``block_size`` validation pairs.

    Args:
        num_concepts: C; ``None`` reads ``num_concepts`` from the data module in ``setup``.
        embed_dim: K; ``None`` reads ``embed_dim`` from the data module.
        num_samples: N of the training set (size of ``u``, ``v``); ``None`` reads
            ``num_train_samples`` from the data module.
        concept_labels: names of the C concepts (for :meth:`explain`); ``None`` reads
            ``concept_labels`` from the data module when it has them.
        hidden_dim: ``None`` for the linear surrogate (paper), or an MLP's hidden width.
        nonnegative: constrain the surrogate's concept weights to :math:`W \ge 0`
            (:class:`~lico_lightning.concepts.ConceptSurrogate`; projected after every
            optimizer step, so every saved checkpoint satisfies it). Off in the paper.
        temperature: :math:`\tau` of teacher and student (paper: 0.1).
        gamma_teacher: :math:`\gamma_1` (paper: 0.9).
        gamma_student: :math:`\gamma_2` (paper: 0.9).
        estimator: ``"moving_average"`` (Algorithm 1) or ``"in_batch"`` (biased, ablation).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        block_size: pairs per block of the retrieval metrics (paper: 1000).
        clip_model: open_clip model name of the teacher (``open_clip.create_model``, e.g.
            ``"ViT-B-32"``, the paper's); ignored with ``clip_model_cfg``, ``None`` with ``teacher``.
        clip_pretrained: open_clip pretrained tag (``"openai"``) or ``None`` (ignored with
            ``clip_model_cfg``).
        clip_model_cfg: an open_clip config dict instead of ``clip_model`` (tiny models).
        clip_checkpoint: teacher weights loaded after building (an open_clip state dict or a
            ``CLIPFineTuner`` checkpoint, :func:`load_open_clip_weights`), e.g. the tiny CLIP
            of ``recipes/clip_shapes.yaml``.
        teacher: a built frozen :class:`~lico_lightning.explain.DualEncoder` instead of the
            ``clip_*`` options, which are then saved as ``None`` (not a hyperparameter: pass
            it again after loading a checkpoint).

    Example:
        >>> model = SurrogateDistiller(num_concepts=3, embed_dim=4, num_samples=8,
        ...                            concept_labels=["dog", "grass", "ball"])
        >>> g = torch.Generator().manual_seed(0)
        >>> img, txt = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
        >>> out = model.loss_fn(img, txt, model.surrogate(torch.rand(8, 3, generator=g)),
        ...                     torch.arange(8))
        >>> out.loss.backward()
        >>> (exp,) = model.explain(torch.tensor([[1.0, 0.5, 0.0]]), k=2)
        >>> len(exp.labels), round(sum(exp.weights) + exp.bias_weight, 4)  # ball scores 0
        (2, 1.0)
    """

    def __init__(
        self,
        num_concepts: int | None = None,
        embed_dim: int | None = None,
        num_samples: int | None = None,
        concept_labels: list[str] | None = None,
        hidden_dim: int | None = None,
        nonnegative: bool = False,
        temperature: float = 0.1,
        gamma_teacher: float = 0.9,
        gamma_student: float = 0.9,
        estimator: Literal["moving_average", "in_batch"] = "moving_average",
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        block_size: int = 1000,
        clip_model: str | None = "ViT-B-32",
        clip_pretrained: str | None = "openai",
        clip_model_cfg: dict[str, Any] | None = None,
        clip_checkpoint: str | None = None,
        teacher: Any = None,
    ) -> None:
        super().__init__()
        check_real("lr", lr, low=0.0)
        check_real("weight_decay", weight_decay, low=0.0, strict=False)
        check_int("block_size", block_size, 1)
        if clip_model is not None and not isinstance(clip_model, str):
            raise TypeError(f"Expected `clip_model` to be a str, but got {clip_model!r}.")
        if clip_model_cfg is not None and not isinstance(clip_model_cfg, dict):
            raise TypeError(
                f"Expected `clip_model_cfg` to be a dict, but got {type(clip_model_cfg).__name__}."
            )
        self.save_hyperparameters(ignore=["teacher"])
        self._teacher: Any = None  # plain attribute: never in state_dict or the optimizer
        if teacher is not None:
            self._teacher = _frozen(teacher)
            for name in ("clip_model", "clip_pretrained", "clip_model_cfg", "clip_checkpoint"):
                self.hparams[name] = None  # unused: a checkpoint must not name another CLIP
        self.zero_shot_weights: Tensor | None = None  # (K, L), rebuilt from CLIP: not saved
        self.zero_shot: dict[str, Any] | None = None  # name -> MulticlassAccuracy (registered)
        self.surrogate: ConceptSurrogate | None = None
        self.loss_fn: SurrogateDistillationLoss | None = None
        self.val_faithfulness = RetrievalFaithfulness(_K, block_size, "clip")
        self.val_performance = RetrievalFaithfulness(_K, block_size, "pairing")
        if None not in (num_concepts, embed_dim, num_samples):
            self._build()

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        hp = self.hparams
        self.surrogate = ConceptSurrogate(
            hp["num_concepts"],
            hp["embed_dim"],
            hp["hidden_dim"],
            nonnegative=bool(hp.get("nonnegative", False)),  # older checkpoints lack it
        )
        self.loss_fn = SurrogateDistillationLoss(
            hp["num_samples"],
            temperature=hp["temperature"],
            gamma_teacher=hp["gamma_teacher"],
            gamma_student=hp["gamma_student"],
            estimator=hp["estimator"],
        )
        labels = hp["concept_labels"]
        if labels is not None and len(labels) != hp["num_concepts"]:
            raise ValueError(
                f"Expected {hp['num_concepts']} concept labels, but got {len(labels)}."
            )

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.surrogate is not None:
            return
        sizes = {}
        for name, attr in (
            ("num_concepts", "num_concepts"),
            ("embed_dim", "embed_dim"),
            ("num_samples", "num_train_samples"),
        ):
            value = self.hparams[name]
            if value is None:
                value = getattr(dm, attr, None)
            if value is None:
                raise ValueError(
                    f"Expected `{name}` to be given, or a data module with `{attr}`, but got "
                    f"neither ({type(dm).__name__ if dm is not None else 'no data module'})."
                )
            sizes[name] = int(value)
        self.hparams.update(sizes)
        if self.hparams["concept_labels"] is None:
            labels = getattr(dm, "concept_labels", None)
            if labels is not None:
                self.hparams["concept_labels"] = list(labels)
        self._build()
        self.to(self.device)

    def teacher(self) -> Any:
        """The frozen teacher :class:`~lico_lightning.explain.DualEncoder` (the ``teacher``
        given, or built from the ``clip_*`` hyperparameters on first call): eval mode,
        ``requires_grad`` off, never saved.

        Example:
            >>> from lico_lightning.testing import tiny_dual_encoder
            >>> model = SurrogateDistiller(teacher=tiny_dual_encoder())
            >>> model.teacher().module.training, model.hparams.clip_model
            (False, None)
            >>> [k for k in model.state_dict() if "visual" in k]  # no CLIP weight is saved
            []
        """
        if self._teacher is None:
            hp = self.hparams
            if hp.get("clip_model") is None and hp.get("clip_model_cfg") is None:
                raise ValueError(
                    "Expected a teacher: `clip_model` or `clip_model_cfg` (or a built `teacher`), "
                    "but got none; it encodes online batches (images / tokens) and the data "
                    "module's embedding cache."
                )
            self._teacher = _frozen(
                _open_clip_teacher(
                    hp.get("clip_model"),
                    hp.get("clip_pretrained"),
                    hp.get("clip_model_cfg"),
                    hp.get("clip_checkpoint"),
                )
            )
        return self._teacher

    def set_zero_shot_classifier(self, class_embeds: Tensor) -> None:
        """Zero-shot classification of surrogate vs CLIP in validation: ``class_embeds``
        ``(L, K)`` CLIP text embeddings of the L classes (e.g. ``open_clip.build_zero_shot_classifier``
        transposed). Validation batches with a ``"label"`` entry ``(B,)`` then log
        ``val/zeroshot_acc_surrogate`` and ``val/zeroshot_acc_clip`` (top-1 of the cosine)."""
        from torchmetrics.classification import MulticlassAccuracy

        check_tensor("class_embeds", class_embeds, ndim=2, floating=True)
        if (
            self.hparams["embed_dim"] is not None
            and class_embeds.shape[1] != self.hparams["embed_dim"]
        ):
            raise ValueError(
                f"Expected `class_embeds` of width {self.hparams['embed_dim']}, but got shape "
                f"{tuple(class_embeds.shape)}."
            )
        self.zero_shot_weights = F.normalize(class_embeds.detach().float(), dim=-1).T
        n = class_embeds.shape[0]
        self.zero_shot_surrogate = MulticlassAccuracy(num_classes=n, average="micro").to(
            self.device
        )
        self.zero_shot_clip = MulticlassAccuracy(num_classes=n, average="micro").to(self.device)
        self.zero_shot = {"surrogate": self.zero_shot_surrogate, "clip": self.zero_shot_clip}

    def on_fit_start(self) -> None:
        if self._teacher is not None:  # e.g. moved by the data module while caching
            self._teacher.module.to(self.device).eval()

    # ------------------------------------------------------------------ batches
    def _embeddings(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if not isinstance(batch, Mapping):
            raise TypeError(
                "Expected a dict batch with 'concepts', 'index' and 'image_embeds'/'text_embeds' "
                f"(or 'images'/'tokens'), but got {type(batch).__name__}."
            )
        if "index" not in batch:
            raise ValueError(
                "Expected batches with an 'index' entry (dataset positions for the per-sample "
                f"estimators), but got keys {sorted(batch)}; use a dataset that returns indices "
                "(e.g. ConceptPairDataset)."
            )
        if "concepts" not in batch:
            raise ValueError(
                f"Expected a 'concepts' entry in the batch, but got keys {sorted(batch)}."
            )
        if "image_embeds" in batch and "text_embeds" in batch:
            image, text = batch["image_embeds"], batch["text_embeds"]
        elif "images" in batch and "tokens" in batch:
            teacher = self.teacher()
            with torch.no_grad():
                image = teacher.encode_image(batch["images"])
                text = teacher.encode_text(batch["tokens"])
        else:
            raise ValueError(
                "Expected 'image_embeds' and 'text_embeds' (cached) or 'images' and 'tokens' "
                f"(online) in the batch, but got keys {sorted(batch)}."
            )
        index = batch["index"]
        if not isinstance(index, Tensor):
            index = torch.as_tensor(index)
        concepts = batch["concepts"]
        dense = (
            concepts.values() if isinstance(concepts, Tensor) and concepts.is_sparse else concepts
        )
        parts = {"image_embeds": image, "text_embeds": text, "concepts": dense}
        if not bool(torch.stack([torch.isfinite(x).all() for x in parts.values()]).all()):
            for name, x in parts.items():  # one sync when all is well; details only on error
                check_finite(name, x)
        return image, text, concepts, index.to(image.device)

    def _step(self, batch: Mapping[str, Any]) -> tuple[Any, Tensor, Tensor, Tensor, Tensor]:
        if self.surrogate is None or self.loss_fn is None:
            raise RuntimeError("Expected setup() to build the surrogate before the first step.")
        image, text, concepts, index = self._embeddings(batch)
        surrogate = self.surrogate(concepts)
        return self.loss_fn(image, text, surrogate, index), image, text, surrogate, index

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        out, image, *_ = self._step(batch)
        b = image.shape[0]
        self.log("train/loss", out.loss, batch_size=b, prog_bar=True)
        self.log("train/kl", out.kl, batch_size=b)
        self.log("train/top1_agreement", out.top1_agreement, batch_size=b)
        return out.loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        out, image, text, surrogate, index = self._step(batch)
        b = image.shape[0]
        self.log("val/kl", out.kl, batch_size=b, sync_dist=True)
        self.log("val/top1_agreement", out.top1_agreement, batch_size=b, sync_dist=True)
        for _, metric in self._retrieval_metrics():
            metric.update(surrogate, image, text, index)
        if self.zero_shot is not None and isinstance(batch, Mapping) and "label" in batch:
            weights = self.zero_shot_weights.to(surrogate.device)  # type: ignore[union-attr]
            for name, emb in (("surrogate", surrogate), ("clip", image)):
                acc = self.zero_shot[name]
                acc.update(F.normalize(emb.float(), dim=-1) @ weights, batch["label"])
                self.log(f"val/zeroshot_acc_{name}", acc, batch_size=b)

    def _retrieval_metrics(self) -> tuple[tuple[str, RetrievalFaithfulness], ...]:
        return (("faithfulness", self.val_faithfulness), ("performance", self.val_performance))

    def on_validation_epoch_end(self) -> None:
        for name, metric in self._retrieval_metrics():
            if isinstance(metric.index, list) and not metric.index:  # no validation batch
                continue
            values = metric.compute()
            for d, direction in enumerate(_DIRECTIONS):
                for j, k in enumerate(metric.k):
                    self.log(f"val/{name}_{direction}_r{k}", values[d, j])
            metric.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.surrogate is None:
            raise RuntimeError("Expected setup() to build the surrogate before the optimizer.")
        return torch.optim.AdamW(
            self.surrogate.parameters(),
            lr=self.hparams["lr"],
            weight_decay=self.hparams["weight_decay"],
            amsgrad=True,
        )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then the surrogate's projection onto its constraint set
        (``nonnegative``: :math:`W \\ge 0` holds after every step)."""
        super().optimizer_step(*args, **kwargs)
        if self.surrogate is not None:
            self.surrogate.project_()

    # ------------------------------------------------------------------ explanations
    def explain(
        self, concepts: Tensor, k: int = 10, labels: Sequence[str] | None = None
    ) -> list[ConceptExplanation]:
        """Top-``k`` signed concept weights per image (see :meth:`ConceptSurrogate.explain`).

        Labels default to ``concept_labels`` (or ``"c0"``, ``"c1"``, ... without them).
        """
        if self.surrogate is None:
            raise RuntimeError("Expected a built surrogate (after setup()), but got none.")
        if labels is None:
            labels = self.hparams["concept_labels"] or [
                f"c{i}" for i in range(self.surrogate.num_concepts)
            ]
        return self.surrogate.explain(concepts.to(self.device), labels, k)

    # ------------------------------------------------------------------ checkpoints
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.surrogate is None:  # sizes were inferred at fit time: they are in hparams now
            for name in ("num_concepts", "embed_dim", "num_samples", "concept_labels"):
                self.hparams[name] = checkpoint["hyper_parameters"].get(name)
            self._build()
