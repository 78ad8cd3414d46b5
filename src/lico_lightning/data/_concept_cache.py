"""Frozen-CLIP embeddings computed once per image and per caption, and the dataset over them.

EXPLAIN-R never trains CLIP, so the teacher's embeddings can be computed once: every image and
*every* caption of it (:func:`encode_caption_dataset` → :class:`CaptionEmbeddings`). Drawing
"a random caption per image" each epoch is then an index lookup (:class:`ConceptPairDataset`).
With image augmentation the image embeddings change every epoch: :class:`ConceptImageDataset`
yields images and tokens instead, which the distiller encodes with the frozen CLIP each step.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from lico_lightning._io import load_torch, save_torch
from lico_lightning._safety import preserve_model_state
from lico_lightning._validation import check_int, check_real, check_tensor
from lico_lightning.data._sampler import ResumableRandomSampler
from lico_lightning.functional import wilson_interval

__all__ = [
    "CaptionEmbeddings",
    "ConceptImageDataset",
    "ConceptPairDataset",
    "EpochKeySampler",
    "encode_caption_dataset",
    "random_crop_flip",
]


@dataclass(frozen=True)
class CaptionEmbeddings:
    """CLIP embeddings of N images and of all their M captions (not L2-normalised).

    Attributes:
        image_embeds: ``(N, K)``.
        caption_embeds: ``(M, K)``, the captions of image 0 first, then image 1, ...
        caption_offsets: ``(N + 1,)`` long; image *i*'s captions are rows
            ``caption_offsets[i]:caption_offsets[i + 1]``.
    """

    image_embeds: Tensor
    caption_embeds: Tensor
    caption_offsets: Tensor

    def __post_init__(self) -> None:
        check_tensor("image_embeds", self.image_embeds, ndim=2, floating=True)
        check_tensor("caption_embeds", self.caption_embeds, ndim=2, floating=True)
        offsets = check_tensor("caption_offsets", self.caption_offsets, ndim=1)
        n, m = self.image_embeds.shape[0], self.caption_embeds.shape[0]
        if (
            offsets.shape[0] != n + 1
            or int(offsets[0]) != 0
            or int(offsets[-1]) != m
            or bool((offsets[1:] <= offsets[:-1]).any())
        ):
            raise ValueError(
                f"Expected `caption_offsets` ({n + 1},) rising from 0 to {m} (at least one caption "
                f"per image), but got {offsets.tolist()[:8]}..."
            )
        if self.caption_embeds.shape[1] != self.image_embeds.shape[1]:
            raise ValueError(
                f"Expected image and caption embeddings of the same width, but got "
                f"{self.image_embeds.shape[1]} and {self.caption_embeds.shape[1]}."
            )

    @property
    def num_images(self) -> int:
        return self.image_embeds.shape[0]

    def num_captions(self, index: int) -> int:
        return int(self.caption_offsets[index + 1] - self.caption_offsets[index])

    def save(self, path: str | Path) -> None:
        """``torch.save`` of the three tensors (whole or not at all)."""
        save_torch(
            {
                "image_embeds": self.image_embeds,
                "caption_embeds": self.caption_embeds,
                "caption_offsets": self.caption_offsets,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> CaptionEmbeddings:
        """Read what :meth:`save` wrote (tensors only, ``weights_only=True``)."""
        hint = "Delete the cache folder to rebuild it."
        state = load_torch(path, "a caption embeddings cache (CaptionEmbeddings.save)", hint)
        fields = ("image_embeds", "caption_embeds", "caption_offsets")
        missing = [k for k in fields if not isinstance(state, dict) or k not in state]
        if missing:
            raise ValueError(
                f"Expected the tensors {list(fields)} in the caption embeddings cache {path}, but "
                f"{missing} are missing. {hint}"
            )
        return cls(**{k: state[k] for k in fields})


def _check_caption_dataset(dataset: Any) -> None:
    for attr in ("num_images", "load_image", "captions", "tokenize"):
        if not hasattr(dataset, attr):
            raise TypeError(
                f"Expected a caption dataset with `{attr}` (e.g. lico_lightning.data."
                f"CaptionDataset), but got {type(dataset).__name__}."
            )


@torch.no_grad()
def encode_caption_dataset(
    dual_encoder: Any,
    dataset: Any,
    batch_size: int = 256,
    progress: bool | None = None,
) -> CaptionEmbeddings:
    """Embed every image and every caption of a caption dataset once with a frozen dual encoder.

    Args:
        dual_encoder: a :class:`~lico_lightning.explain.DualEncoder` (``encode_image`` /
            ``encode_text`` / ``module``).
        dataset: a :class:`~lico_lightning.data.CaptionDataset` (``num_images``,
            ``load_image(i)``, ``captions(i)``, ``tokenize(captions)``).
        batch_size: images / captions per forward pass.
        progress: tqdm bar (``None``: for more than 2000 images).

    The model's train/eval modes are restored afterwards.
    """
    check_int("batch_size", batch_size, 1)
    _check_caption_dataset(dataset)
    n = dataset.num_images
    show = n > 2000 if progress is None else progress
    module = dual_encoder.module
    device = next(module.parameters()).device
    images, captions, counts = [], [], []
    with preserve_model_state(module):
        for start in tqdm(range(0, n, batch_size), desc="encoding images", disable=not show):
            idx = range(start, min(start + batch_size, n))
            batch = torch.stack([dataset.load_image(i) for i in idx]).to(device)
            images.append(dual_encoder.encode_image(batch).float().cpu())
        texts: list[str] = []
        for i in range(n):
            caps = dataset.captions(i)
            counts.append(len(caps))
            texts.extend(caps)
        for start in tqdm(
            range(0, len(texts), batch_size), desc="encoding captions", disable=not show
        ):
            tokens = dataset.tokenize(texts[start : start + batch_size]).to(device)
            captions.append(dual_encoder.encode_text(tokens).float().cpu())
    offsets = torch.zeros(n + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(counts, dtype=torch.long).cumsum(0)
    return CaptionEmbeddings(torch.cat(images), torch.cat(captions), offsets)


class EpochKeySampler(ResumableRandomSampler):
    """:class:`~lico_lightning.data.ResumableRandomSampler` whose keys also carry the epoch:
    ``key = index + epoch · N``, so that :class:`ConceptPairDataset` draws the epoch's caption
    without shared state (works with worker processes and under DDP, where Lightning forwards
    ``set_epoch``).

    Example:
        >>> s = EpochKeySampler(3, seed=0)
        >>> s.set_epoch(2)
        >>> sorted(s)
        [6, 7, 8]
    """

    def __iter__(self) -> Iterator[int]:
        offset = self.epoch * self.num_items
        return iter((self.indices() + offset).tolist())


class _ConceptRows(Dataset):
    """Concept scores of N images, the caption draw and the score jitter of the two datasets.

    Every random draw is a pure function of ``(seed, epoch, index)`` (the epoch comes with the
    :class:`EpochKeySampler` key), so there is no generator state to save: a run resumed at an
    epoch boundary draws exactly what the uninterrupted run draws, with any number of workers
    and on every DDP rank.
    """

    def __init__(
        self,
        concept_scores: Tensor,
        caption_counts: Tensor,
        train: bool,
        seed: int,
        score_jitter: float | None,
    ) -> None:
        check_tensor("concept_scores", concept_scores, ndim=2, floating=True)
        if concept_scores.shape[0] != caption_counts.shape[0]:
            raise ValueError(
                f"Expected one concept row per image ({caption_counts.shape[0]}), but got "
                f"`concept_scores` of shape {tuple(concept_scores.shape)}."
            )
        if score_jitter is not None:
            check_real("score_jitter", score_jitter, low=0.0, high=1.0, strict=False)
            if score_jitter >= 1.0:
                raise ValueError(f"Expected `score_jitter` in [0, 1), but got {score_jitter}.")
        self._dense: Tensor | None = None
        if concept_scores.layout == torch.strided:
            self._dense = concept_scores.float()
            rows, cols = self._dense.nonzero(as_tuple=True)
            values = self._dense[rows, cols]
        else:  # row-sorted COO → (row offsets, columns, values), no beta CSR tensors
            coo = concept_scores.to_sparse_coo().coalesce()
            rows, self._cols = coo.indices()
            self._vals = coo.values().float()
            values = self._vals
            self._crow = torch.zeros(concept_scores.shape[0] + 1, dtype=torch.long)
            self._crow[1:] = torch.bincount(rows, minlength=concept_scores.shape[0]).cumsum(0)
        self.caption_counts = caption_counts.long()
        if score_jitter is not None and train:
            n = self.caption_counts[rows].double()
            k = values.double() * n
            off = (k - k.round()).abs() > 1e-3
            if bool(off.any()) or bool((values < 0).any()) or bool((values > 1).any()):
                bad = int(off.nonzero()[0]) if bool(off.any()) else 0
                raise ValueError(
                    "Expected concept scores that are caption shares k/n (n = the image's "
                    "captions) for `score_jitter`, but got "
                    f"{float(values[bad])} for image {int(rows[bad])} with "
                    f"{int(n[bad])} captions; pass score_jitter=None for other scores."
                )
        self.num_concepts = concept_scores.shape[1]
        self.train = train
        self.seed = check_int("seed", seed, 0)
        self.score_jitter = score_jitter

    def __len__(self) -> int:
        return int(self.caption_counts.shape[0])

    def _split_key(self, key: int) -> tuple[int, int]:
        if key < 0:
            raise IndexError(f"Expected a non-negative key, but got {key}.")
        epoch, index = divmod(int(key), len(self))
        return epoch, index

    def caption_choice(self, index: int, epoch: int = 0) -> int:
        """Which of image ``index``'s captions is used in ``epoch`` (0 in evaluation)."""
        if not self.train:
            return 0
        draw = random.Random(f"{self.seed}/{epoch}/{index}").randrange
        return draw(int(self.caption_counts[index]))

    def _generator(self, index: int, epoch: int, what: str) -> torch.Generator:
        bits = random.Random(f"{self.seed}/{epoch}/{index}/{what}").getrandbits(63)
        return torch.Generator().manual_seed(bits)

    def concepts(self, index: int, epoch: int = 0) -> Tensor:
        r"""``(C,)`` dense concept scores of image ``index`` (jittered in training).

        With ``score_jitter = a`` each non-zero score :math:`k/n` is replaced, per epoch, by
        an end of its Wilson interval (:func:`~lico_lightning.functional.wilson_interval`) at
        a level :math:`r \sim U[0, a)`, the lower or upper end with probability 1/2 — as the
        reference code does. Values stay inside the interval at level ``a``; zeros (concepts
        no caption mentions) stay 0.
        """
        if self._dense is not None:
            row = self._dense[index]
            if not (self.train and self.score_jitter is not None):
                return row
            cols = row.nonzero()[:, 0]
            vals = row[cols]
        else:
            start, stop = int(self._crow[index]), int(self._crow[index + 1])
            cols, vals = self._cols[start:stop], self._vals[start:stop]
        row = torch.zeros(self.num_concepts)
        if self.train and self.score_jitter is not None and cols.numel() > 0:
            g = self._generator(index, epoch, "scores")
            conf = torch.rand(cols.numel(), generator=g, dtype=torch.float64) * self.score_jitter
            upper = torch.rand(cols.numel(), generator=g) < 0.5
            n = self.caption_counts[index].double()
            low, high = wilson_interval((vals.double() * n).round(), n, conf)
            vals = torch.where(upper, high, low).float()
        row[cols] = vals
        return row


class ConceptPairDataset(_ConceptRows):
    """Items ``{"image_embeds", "text_embeds", "concepts", "index"}`` over cached embeddings.

    ``text_embeds`` is one caption of the image: in training a random one, a pure function of
    ``(seed, epoch, index)`` where the epoch comes with the key of :class:`EpochKeySampler`
    (``key = index + epoch · N``; a plain index is epoch 0); in evaluation the first one.
    ``concepts`` are jittered in training when ``score_jitter`` is set (:meth:`concepts`),
    never in evaluation.

    Args:
        embeddings: the cached :class:`CaptionEmbeddings`.
        concept_scores: ``(N, C)`` concept scores, dense or sparse
            (:meth:`~lico_lightning.concepts.ConceptVocabulary.scores`).
        train: random caption (True) or the first (False).
        seed: seed of the caption draw and of the jitter.
        score_jitter: ``None`` (no jitter) or the largest confidence level of the Wilson
            interval the scores are jittered in (the reference code: 0.8). Needs scores that
            are caption shares k/n.

    Example:
        >>> emb = CaptionEmbeddings(torch.eye(2), torch.eye(2).repeat(2, 1), torch.tensor([0, 3, 4]))
        >>> data = ConceptPairDataset(emb, torch.tensor([[1.0, 0.0], [0.5, 0.5]]), train=False)
        >>> item = data[1]
        >>> item["text_embeds"].tolist(), item["concepts"].tolist(), item["index"]
        ([0.0, 1.0], [0.5, 0.5], 1)
    """

    def __init__(
        self,
        embeddings: CaptionEmbeddings,
        concept_scores: Tensor,
        train: bool = True,
        seed: int = 0,
        score_jitter: float | None = None,
    ) -> None:
        counts = embeddings.caption_offsets[1:] - embeddings.caption_offsets[:-1]
        super().__init__(concept_scores, counts, train, seed, score_jitter)
        self.embeddings = embeddings

    def caption_row(self, index: int, epoch: int = 0) -> int:
        """Row of ``caption_embeds`` used for image ``index`` in ``epoch``."""
        return int(self.embeddings.caption_offsets[index]) + self.caption_choice(index, epoch)

    def __getitem__(self, key: int) -> dict[str, Any]:
        epoch, index = self._split_key(key)
        return {
            "image_embeds": self.embeddings.image_embeds[index],
            "text_embeds": self.embeddings.caption_embeds[self.caption_row(index, epoch)],
            "concepts": self.concepts(index, epoch),
            "index": index,
        }


def random_crop_flip(image: Tensor, generator: torch.Generator, min_scale: float = 0.8) -> Tensor:
    r"""The paper's image augmentation on a ``(C, H, W)`` tensor: a random crop of side
    :math:`s \cdot (H, W)`, :math:`s \sim U[\text{min\_scale}, 1]`, resized back to ``(H, W)``
    (bilinear), then a horizontal flip with probability 1/2. Draws from ``generator`` only.

    Example:
        >>> x = torch.arange(16.0).reshape(1, 4, 4)
        >>> random_crop_flip(x, torch.Generator().manual_seed(0), min_scale=1.0).shape
        torch.Size([1, 4, 4])
    """
    check_tensor("image", image, ndim=3, floating=True)
    check_real("min_scale", min_scale, low=0.0, high=1.0)
    _, h, w = image.shape
    u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    scale = min_scale + (1.0 - min_scale) * u[0]
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = int(u[1] * (h - ch + 1)), int(u[2] * (w - cw + 1))
    crop = image[:, top : top + ch, left : left + cw]
    if (ch, cw) != (h, w):
        crop = F.interpolate(crop[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return crop.flip(-1) if u[3] < 0.5 else crop


class ConceptImageDataset(_ConceptRows):
    """Online items ``{"images", "tokens", "concepts", "index"}``: the frozen CLIP encodes them
    in every step (:class:`~lico_lightning.modules.SurrogateDistiller` with a dual encoder),
    so each epoch may see a new augmented view of every image.

    The caption (random per epoch in training, the first in evaluation) and the concept jitter
    follow exactly the rules of :class:`ConceptPairDataset` with the same ``seed``: without
    augmentation the two datasets give CLIP embeddings of the same pairs.

    Args:
        captions: a caption dataset (``num_images``, ``load_image(i)``, ``captions(i)``,
            ``tokenize(captions)``; e.g. :class:`~lico_lightning.data.CaptionDataset`).
        concept_scores: ``(N, C)`` concept scores, dense or sparse.
        train: training draws (caption, jitter, augmentation) or evaluation (none).
        seed: seed of every draw (a pure function of ``(seed, epoch, index)``).
        score_jitter: as in :class:`ConceptPairDataset`.
        augment: in training, :func:`random_crop_flip` each image (paper, appendix B.3).
        min_scale: smallest crop side (share of the image side).
    """

    def __init__(
        self,
        captions: Any,
        concept_scores: Tensor,
        train: bool = True,
        seed: int = 0,
        score_jitter: float | None = None,
        augment: bool = False,
        min_scale: float = 0.8,
    ) -> None:
        _check_caption_dataset(captions)
        counts = torch.tensor([len(captions.captions(i)) for i in range(captions.num_images)])
        super().__init__(concept_scores, counts, train, seed, score_jitter)
        self.dataset = captions
        self.augment = bool(augment)
        self.min_scale = check_real("min_scale", min_scale, low=0.0, high=1.0)

    def image(self, index: int, epoch: int = 0) -> Tensor:
        """``(C, H, W)`` image ``index`` as seen in ``epoch`` (augmented in training)."""
        image = self.dataset.load_image(index)
        if self.train and self.augment:
            image = random_crop_flip(image, self._generator(index, epoch, "image"), self.min_scale)
        return image

    def __getitem__(self, key: int) -> dict[str, Any]:
        epoch, index = self._split_key(key)
        caption = self.dataset.captions(index)[self.caption_choice(index, epoch)]
        return {
            "images": self.image(index, epoch),
            "tokens": self.dataset.tokenize([caption])[0],
            "concepts": self.concepts(index, epoch),
            "index": index,
        }
