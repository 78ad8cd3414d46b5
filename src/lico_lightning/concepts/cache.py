"""Frozen-CLIP embeddings computed once per image and per caption, and the dataset over them.

EXPLAIN-R never trains CLIP, so the teacher's embeddings can be computed once: every image and
*every* caption of it (:func:`encode_caption_dataset` → :class:`CaptionEmbeddings`). Drawing
"a random caption per image" each epoch is then an index lookup (:class:`ConceptPairDataset`).
With image augmentation the image embeddings change every epoch; use the distiller's online
mode (batches of images and tokens) instead.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from lico_lightning._safety import preserve_model_state
from lico_lightning._validation import check_int, check_tensor
from lico_lightning.data import ResumableRandomSampler

__all__ = [
    "CaptionEmbeddings",
    "ConceptPairDataset",
    "EpochKeySampler",
    "encode_caption_dataset",
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
        """``torch.save`` of the three tensors."""
        torch.save(
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
        return cls(**torch.load(path, weights_only=True))


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
    for attr in ("num_images", "load_image", "captions", "tokenize"):
        if not hasattr(dataset, attr):
            raise TypeError(
                f"Expected a caption dataset with `{attr}` (e.g. lico_lightning.data."
                f"CaptionDataset), but got {type(dataset).__name__}."
            )
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


class ConceptPairDataset(Dataset):
    """Items ``{"image_embeds", "text_embeds", "concepts", "index"}`` over cached embeddings.

    ``text_embeds`` is one caption of the image: in training a random one, a pure function of
    ``(seed, epoch, index)`` where the epoch comes with the key of :class:`EpochKeySampler`
    (``key = index + epoch · N``; a plain index is epoch 0); in evaluation the first one.

    Args:
        embeddings: the cached :class:`CaptionEmbeddings`.
        concept_scores: ``(N, C)`` concept scores, dense or sparse
            (:meth:`~lico_lightning.concepts.ConceptVocabulary.scores`).
        train: random caption (True) or the first (False).
        seed: seed of the caption draw.

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
    ) -> None:
        check_tensor("concept_scores", concept_scores, ndim=2, floating=True)
        if concept_scores.shape[0] != embeddings.num_images:
            raise ValueError(
                f"Expected one concept row per image ({embeddings.num_images}), but got "
                f"`concept_scores` of shape {tuple(concept_scores.shape)}."
            )
        self.embeddings = embeddings
        self._dense: Tensor | None = None
        if concept_scores.layout == torch.strided:
            self._dense = concept_scores.float()
        else:  # row-sorted COO → (row offsets, columns, values), no beta CSR tensors
            coo = concept_scores.to_sparse_coo().coalesce()
            rows, self._cols = coo.indices()
            self._vals = coo.values().float()
            self._crow = torch.zeros(concept_scores.shape[0] + 1, dtype=torch.long)
            self._crow[1:] = torch.bincount(rows, minlength=concept_scores.shape[0]).cumsum(0)
        self.num_concepts = concept_scores.shape[1]
        self.train = train
        self.seed = check_int("seed", seed, 0)

    def __len__(self) -> int:
        return self.embeddings.num_images

    def caption_row(self, index: int, epoch: int = 0) -> int:
        """Row of ``caption_embeds`` used for image ``index`` in ``epoch``."""
        first = int(self.embeddings.caption_offsets[index])
        if not self.train:
            return first
        draw = random.Random(f"{self.seed}/{epoch}/{index}").randrange
        return first + draw(self.embeddings.num_captions(index))

    def concepts(self, index: int) -> Tensor:
        """``(C,)`` dense concept scores of image ``index``."""
        if self._dense is not None:
            return self._dense[index]
        start, stop = int(self._crow[index]), int(self._crow[index + 1])
        row = torch.zeros(self.num_concepts)
        row[self._cols[start:stop]] = self._vals[start:stop]
        return row

    def __getitem__(self, key: int) -> dict[str, Any]:
        epoch, index = divmod(int(key), len(self))
        if key < 0:
            raise IndexError(f"Expected a non-negative key, but got {key}.")
        return {
            "image_embeds": self.embeddings.image_embeds[index],
            "text_embeds": self.embeddings.caption_embeds[self.caption_row(index, epoch)],
            "concepts": self.concepts(index),
            "index": index,
        }
