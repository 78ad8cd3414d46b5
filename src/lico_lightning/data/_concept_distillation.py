"""The EXPLAIN-R data module: caption data + frozen teacher CLIP → cached embeddings + concept
scores."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from lico_lightning._io import write_text
from lico_lightning._validation import check_int, check_real
from lico_lightning.concepts import ConceptVocabulary, tag_captions
from lico_lightning.data._base import warn_if_resumed_differently
from lico_lightning.data._concept_cache import (
    CaptionEmbeddings,
    ConceptImageDataset,
    ConceptPairDataset,
    EpochKeySampler,
    encode_caption_dataset,
)

__all__ = ["ConceptDistillationDataModule"]


class ConceptDistillationDataModule(pl.LightningDataModule):
    """Everything :class:`~lico_lightning.modules.SurrogateDistiller` trains on, built once.

    In ``setup``: the caption data module's train / validation splits are embedded by the
    frozen teacher CLIP (every image and every caption, :func:`encode_caption_dataset`), the concept
    vocabulary is built from the *training* captions (appendix B.1) or loaded from JSON, and
    each image gets its concept scores. With ``cache_dir`` the embeddings and the vocabulary
    are written there and reused by later runs (delete the folder after changing the model or
    the data). Batches are dicts of :class:`ConceptPairDataset` (random caption per image and
    epoch in training, the first caption in validation).

    **Score jitter** (``score_jitter``, on by default as in the reference code): in training
    each non-zero concept score :math:`k/n` is redrawn every epoch inside its Wilson interval
    (:meth:`ConceptPairDataset.concepts`); validation scores are exact.

    **Online mode** (``online=True``, implied by ``augment=True``): training batches hold
    images and tokens (:class:`ConceptImageDataset`) instead of cached embeddings, and
    :class:`~lico_lightning.modules.SurrogateDistiller` encodes them with its frozen teacher at
    every step, so that with ``augment`` every epoch sees a new random crop
    and flip of every image (paper, appendix B.3). Validation stays cached and unaugmented.

    Every draw (caption, jitter, augmentation) is a pure function of ``(seed, epoch, index)``,
    so a run resumed from an epoch-end checkpoint continues bitwise; :meth:`state_dict` keeps
    the settings and a resume with other ones warns.

    Images are encoded (cached, or online before augmentation) in the caption data module's
    *evaluation* view (``captions.transform(False)`` when it has one), not its random training
    crop: a cache of one random crop per image would be neither the image nor an augmentation.

    **The teacher** is named once, on the distiller (its ``clip_*`` hyperparameters): without a
    ``teacher`` of its own this module encodes with the attached trainer's LightningModule's
    ``teacher()`` (:meth:`teacher`), so cache and distiller always see the same CLIP.

    Exposes ``num_concepts``, ``embed_dim``, ``num_train_samples``, ``concept_labels`` and
    ``vocabulary`` after ``setup`` (the distiller reads its sizes from them).

    Args:
        captions: a caption data module (e.g. :class:`~lico_lightning.data.ShapesCaptionDataModule`,
            :class:`~lico_lightning.data.COCOCaptionDataModule`) set up for the same CLIP.
        teacher: the frozen CLIP whose embeddings are cached: a
            :class:`~lico_lightning.explain.DualEncoder` or a callable returning one (called
            only when a cache is missing); ``None``: the trainer's LightningModule's
            ``teacher()`` (:class:`~lico_lightning.modules.SurrogateDistiller`).
        vocabulary: a vocabulary JSON (:meth:`ConceptVocabulary.save`); ``None`` builds one.
        min_count: B.1 filter, images mentioning a concept at least.
        max_df: B.1 filter, share of images mentioning a concept at most.
        tagger: NLP back-end for building and scoring (``"spacy"``, ``"nltk"``, ``"words"``).
        lexicon: ``"lemminflect"``, ``"wordnet"`` or ``None``.
        batch_size: distillation batch size (paper: 1024).
        seed: seed of the training order and of the caption draw.
        encode_batch_size: images / captions per CLIP forward while caching.
        cache_dir: folder for cached embeddings and vocabulary (``None``: memory only).
        device: where the teacher runs while caching (``"cpu"``, ``"cuda"``; ``None``: CUDA if available).
        score_jitter: largest confidence level of the Wilson interval the training scores are
            jittered in (reference code: 0.8), or ``None`` for exact scores.
        augment: random crop and horizontal flip of the training images (online mode).
        online: encode training images with the frozen CLIP at every step; ``None``: when
            ``augment`` is on.
        min_scale: smallest crop side of ``augment``, as a share of the image side.
    """

    def __init__(
        self,
        captions: pl.LightningDataModule,
        teacher: Any = None,
        vocabulary: str | None = None,
        min_count: int = 3,
        max_df: float = 0.1,
        tagger: str = "spacy",
        lexicon: str | None = "lemminflect",
        batch_size: int = 1024,
        seed: int = 0,
        encode_batch_size: int = 256,
        cache_dir: str | None = None,
        device: str | None = None,
        score_jitter: float | None = 0.8,
        augment: bool = False,
        online: bool | None = None,
        min_scale: float = 0.8,
    ) -> None:
        super().__init__()
        for attr in ("setup", "train_dataset", "val_dataset"):
            if not hasattr(captions, attr):
                raise TypeError(
                    f"Expected a caption data module (with `{attr}`), but got "
                    f"{type(captions).__name__}."
                )
        self.captions = captions
        self._teacher = teacher
        self.vocabulary_path = vocabulary
        self.min_count, self.max_df = min_count, max_df
        self.tagger, self.lexicon = tagger, lexicon
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        self.encode_batch_size = check_int("encode_batch_size", encode_batch_size, 1)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.device_name = device
        if score_jitter is not None:
            check_real("score_jitter", score_jitter, low=0.0, high=1.0, strict=False)
            if score_jitter >= 1.0:
                raise ValueError(f"Expected `score_jitter` in [0, 1), but got {score_jitter}.")
        for name, flag in (("augment", augment), ("online", online)):
            if flag is not None and not isinstance(flag, bool):
                raise TypeError(f"Expected `{name}` to be a bool, but got {flag!r}.")
        if augment and online is False:
            raise ValueError(
                "Expected online=True (or None) with augment=True: augmented images must be "
                "encoded by CLIP at every step, but got online=False."
            )
        self.score_jitter = score_jitter
        self.augment = augment
        self.online = augment if online is None else online
        self.min_scale = check_real("min_scale", min_scale, low=0.0, high=1.0)
        self.vocabulary: ConceptVocabulary | None = None
        self.train_data: ConceptPairDataset | None = None
        self.val_data: ConceptPairDataset | None = None
        self.train_data_online: ConceptImageDataset | None = None

    # ------------------------------------------------------------------ sizes for the model
    @property
    def num_concepts(self) -> int | None:
        return None if self.vocabulary is None else len(self.vocabulary)

    @property
    def concept_labels(self) -> list[str] | None:
        return None if self.vocabulary is None else self.vocabulary.labels()

    @property
    def embed_dim(self) -> int | None:
        return None if self.val_data is None else self.val_data.embeddings.image_embeds.shape[1]

    @property
    def num_train_samples(self) -> int | None:
        data = self.train_data_online if self.online else self.train_data
        return None if data is None else len(data)

    # ------------------------------------------------------------------ building
    def teacher(self) -> Any:
        """The frozen teacher :class:`~lico_lightning.explain.DualEncoder` that fills the
        embedding cache: ``teacher`` (called if callable), else the attached trainer's
        LightningModule's ``teacher()``."""
        source = self._teacher
        if source is None:
            module = getattr(self.trainer, "lightning_module", None)
            source = getattr(module, "teacher", None)
            if source is None:
                raise ValueError(
                    "Expected a `teacher` (a DualEncoder or a callable returning one), or a "
                    "trainer whose LightningModule has `teacher()` (SurrogateDistiller), but got "
                    "neither."
                )
        encoder = source if hasattr(source, "encode_image") else source()
        if not all(hasattr(encoder, a) for a in ("encode_image", "encode_text", "module")):
            raise TypeError(
                "Expected the teacher to be a DualEncoder (encode_image / encode_text / module), "
                f"but got {type(encoder).__name__}."
            )
        return encoder

    # ------------------------------------------------------------------ the cache's keys
    def _data_key(self, split: str, dataset: Any) -> str:
        """Fingerprint of a split's data: the caption module's class and settings, the
        split's image count, every caption and the evaluation transform."""
        captions = [list(dataset.captions(i)) for i in range(dataset.num_images)]
        return _digest(
            {
                "module": type(self.captions).__name__,
                "hparams": dict(getattr(self.captions, "hparams", {}) or {}),
                "split": split,
                "num_images": dataset.num_images,
                "captions": captions,
                "transform": repr(getattr(dataset, "transform", None)),
            }
        )

    def _cache_keys(self) -> dict[str, str]:
        assert self.cache_dir is not None
        path = self.cache_dir / _KEYS_FILE
        if not path.exists():
            return {}
        try:
            keys = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return keys if isinstance(keys, dict) else {}

    def _cached(self, path: Path | None, key: str) -> bool:
        """Whether ``path`` is in the cache and was built from the data and model of ``key``;
        a file built from others (a changed ``clip_checkpoint``, other captions) is rebuilt,
        with a warning."""
        if path is None or not path.exists():
            return False
        stored = self._cache_keys().get(path.name)
        if stored == key:
            return True
        reason = "no fingerprint (an older cache)" if stored is None else "another fingerprint"
        rank_zero_warn(
            f"{type(self).__name__}: {path} was built from another teacher or other data "
            f"({reason}; expected {key[:12]}); rebuilding it."
        )
        return False

    def _store_key(self, path: Path, key: str) -> None:
        assert self.cache_dir is not None
        keys = self._cache_keys()
        keys[path.name] = key
        write_text(self.cache_dir / _KEYS_FILE, json.dumps(keys, indent=1, sort_keys=True))

    def _embeddings(self, split: str, dataset: Any) -> CaptionEmbeddings:
        path = None if self.cache_dir is None else self.cache_dir / f"{split}_embeddings.pt"
        teacher = self.teacher()
        key = (
            ""
            if path is None
            else _digest([_model_key(teacher.module), self._data_key(split, dataset)])
        )
        if path is not None and self._cached(path, key):
            emb = CaptionEmbeddings.load(path)
            if emb.num_images != dataset.num_images:
                raise ValueError(
                    f"Expected cached {split} embeddings for {dataset.num_images} images, but "
                    f"{path} holds {emb.num_images}; delete the cache folder."
                )
            return emb
        device = self.device_name or ("cuda" if torch.cuda.is_available() else "cpu")
        teacher.module.to(device).eval().requires_grad_(False)
        emb = encode_caption_dataset(teacher, dataset, self.encode_batch_size)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            emb.save(path)
            self._store_key(path, key)
        return emb

    def _vocabulary(self, tagged: Any, train: Any) -> ConceptVocabulary:
        if self.vocabulary_path is not None:
            return ConceptVocabulary.load(self.vocabulary_path)
        path = None if self.cache_dir is None else self.cache_dir / "vocabulary.json"
        key = ""
        if path is not None:
            settings = [self.min_count, self.max_df, self.tagger, self.lexicon]
            key = _digest([self._data_key("train", train), settings])
            if self._cached(path, key):
                return ConceptVocabulary.load(path)
        vocab = ConceptVocabulary.from_captions(
            tagged, self.min_count, self.max_df, tagger=self.tagger, lexicon=self.lexicon
        )
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            vocab.save(path)
            self._store_key(path, key)
        return vocab

    def _eval_view(self, dataset: Any) -> Any:
        """``dataset`` with the caption module's evaluation transform (shallow copy)."""
        transform = getattr(self.captions, "transform", None)
        if not callable(transform) or not hasattr(dataset, "transform"):
            return dataset
        view = copy.copy(dataset)
        view.transform = transform(False)
        return view

    def setup(self, stage: str | None = None) -> None:
        if self.val_data is not None:
            return
        self.captions.setup("fit")
        train = self._eval_view(self.captions.train_dataset)  # type: ignore[attr-defined]
        val = self._eval_view(self.captions.val_dataset)  # type: ignore[attr-defined]

        def captions_of(ds: Any) -> list[list[str]]:
            return [list(ds.captions(i)) for i in range(ds.num_images)]

        train_tags = tag_captions(captions_of(train), self.tagger)
        self.vocabulary = self._vocabulary(train_tags, train)
        train_scores = self.vocabulary.scores(train_tags)
        val_scores = self.vocabulary.scores(captions_of(val), self.tagger)
        where = self.vocabulary_path or (
            "the vocabulary" if self.cache_dir is None else self.cache_dir / "vocabulary.json"
        )
        if _count_nonzero(train_scores) == 0:
            raise ValueError(
                f"Expected concepts of {where} to occur in the training captions, but none of "
                f"its {len(self.vocabulary)} concepts occurs in the {train.num_images} images' "
                "captions (every concept score is 0): a vocabulary of other data, or another "
                "tagger / lexicon?"
            )
        if _count_nonzero(val_scores) == 0:
            rank_zero_warn(
                f"{type(self).__name__}: none of the {len(self.vocabulary)} concepts of {where} "
                "occurs in the validation captions (every validation concept score is 0)."
            )
        if self.online:
            self.train_data_online = ConceptImageDataset(
                train,
                train_scores,
                train=True,
                seed=self.seed,
                score_jitter=self.score_jitter,
                augment=self.augment,
                min_scale=self.min_scale,
            )
        else:
            self.train_data = ConceptPairDataset(
                self._embeddings("train", train),
                train_scores,
                train=True,
                seed=self.seed,
                score_jitter=self.score_jitter,
            )
        self.val_data = ConceptPairDataset(self._embeddings("val", val), val_scores, train=False)

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        data = self.train_data_online if self.online else self.train_data
        if data is None:
            raise RuntimeError("Expected setup('fit') before asking for the train dataloader.")
        sampler = EpochKeySampler(len(data), seed=self.seed)
        return DataLoader(data, batch_size=self.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        if self.val_data is None:
            raise RuntimeError("Expected setup('fit') before asking for the val dataloader.")
        return DataLoader(self.val_data, batch_size=self.batch_size)

    # ------------------------------------------------------------------ checkpoints
    def _draw_config(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "score_jitter": self.score_jitter,
            "augment": self.augment,
            "online": self.online,
            "min_scale": self.min_scale,
        }

    def state_dict(self) -> dict[str, Any]:
        """The settings every training draw depends on (resume checks them)."""
        return {"draws": self._draw_config()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        warn_if_resumed_differently(self, state_dict.get("draws"), self._draw_config())


#: the file of ``cache_dir`` holding each cached file's fingerprint (teacher and data)
_KEYS_FILE = "cache_keys.json"


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _model_key(module: torch.nn.Module) -> str:
    """Fingerprint of a model's weights: per tensor its name, shape, dtype and the float64 sum
    and sum of squares (a changed checkpoint changes them; one pass over the weights)."""
    parts = []
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict().items()):
            values = tensor.detach().to(torch.float64)
            total, squares = float(values.sum()), float((values * values).sum())
            parts.append([name, list(tensor.shape), str(tensor.dtype), total, squares])
    return _digest(parts)


def _count_nonzero(scores: Tensor) -> int:
    if scores.is_sparse:
        return int(scores.coalesce().values().count_nonzero())
    return int(scores.count_nonzero())
