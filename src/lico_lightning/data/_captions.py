"""Image–caption data: one batch convention for CLIP training and one probe item for grounding.

Batch convention (every caption data module):

* training / validation / test batches are ``(image, tokens, index)``: ``image`` ``(B, C, H, W)``
  normalised by the model's open_clip preprocessing, ``tokens`` ``(B, S)`` long caption tokens
  (SOT … EOT, zero-padded to the model's context length S), ``index`` ``(B,)`` long — the
  **image's** position in the split. Every caption is one sample (an image with 5 captions
  appears 5 times per epoch, as in open_clip's CSV training); captions that share ``index``
  belong to the same image, which is how retrieval counts "any of the image's captions".
* a grounding probe is a :class:`GroundingProbe`: ``(image, caption, phrase, char_span,
  token_span, box, distractor_box)`` with the boxes in pixels of the preprocessed image.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lico_lightning import _open_clip as open_clip_helpers
from lico_lightning._validation import check_choice, check_int
from lico_lightning.data._base import (
    check_loader_options,
    save_subclass_hparams,
    warn_if_resumed_differently,
)
from lico_lightning.data._probes import random_order
from lico_lightning.data._sampler import ResumableRandomSampler

__all__ = [
    "CaptionDataModule",
    "CaptionDataset",
    "CaptionRecord",
    "GroundingProbe",
    "PhraseBox",
    "open_clip_preprocessing",
]

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PhraseBox:
    """A phrase of a caption with its box: ``caption[char_span[0]:char_span[1]] == phrase``.

    ``box`` / ``distractor_box`` are ``(x0, y0, x1, y1)`` pixels of the *original* image
    (the dataset maps them through the preprocessing); ``distractor_box`` is the box of another
    object of the scene (``None`` where there is none).
    """

    phrase: str
    char_span: tuple[int, int]
    box: Box
    distractor_box: Box | None = None


@dataclass(frozen=True)
class CaptionRecord:
    """One image: its source (a file path, or ``None`` for generated images), its captions and,
    per caption, the phrases with boxes (empty lists where there are none). ``size`` is the
    original ``(width, height)`` the boxes refer to (read from the file when ``None``)."""

    image: str | None
    captions: tuple[str, ...]
    phrases: tuple[tuple[PhraseBox, ...], ...] = ()
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class GroundingProbe:
    """A (image, caption, phrase, box) item for grounding monitors.

    Attributes:
        image: ``(C, H, W)`` normalised image, as in the training batches.
        caption: the full caption.
        phrase: ``caption[char_span[0]:char_span[1]]``.
        char_span: character span of the phrase in the caption.
        token_span: ``(start, end)`` token positions of the phrase in the tokenised caption
            (end exclusive, SOT at position 0), ready for a pair explainer's span view.
        box: ``(4,)`` float ``(x0, y0, x1, y1)`` pixels of ``image``.
        distractor_box: ``(4,)`` box of another object in the image, or ``None``.
        index: the image's position in its split.
    """

    image: Tensor
    caption: str
    phrase: str
    char_span: tuple[int, int]
    token_span: tuple[int, int]
    box: Tensor
    distractor_box: Tensor | None
    index: int


# ----------------------------------------------------------------------------- open_clip glue
def open_clip_preprocessing(
    model_name: str = "ViT-B-32", model_cfg: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The model's image size, mean/std, resize mode, context length and tokenizer (open_clip's own).

    Returns a dict with ``image_size`` (int), ``mean``, ``std`` (tuples), ``resize_mode``,
    ``interpolation``, ``context_length`` and ``tokenizer`` (open_clip's callable). With
    ``model_cfg`` (a config dict as in open_clip's JSON files) the model name is not looked up.

    Example:
        >>> from lico_lightning.text import tiny_openclip_config
        >>> pre = open_clip_preprocessing(model_cfg=tiny_openclip_config(context_length=16))
        >>> pre["image_size"], pre["context_length"], pre["tokenizer"](["a cat"]).shape
        (32, 16, torch.Size([1, 16]))
    """
    return open_clip_helpers.preprocessing(model_name, model_cfg)


def _count_tokens(tokenizer: Any, text: str) -> int | None:
    """Tokens incl. SOT/EOT for open_clip's BPE tokenizer; ``None`` when it cannot tell."""
    encode = getattr(tokenizer, "encode", None)
    if encode is None:
        return None
    return len(encode(text)) + 2


def _check_context(
    tokenizer: Any, records: Sequence[CaptionRecord], context_length: int, truncate: bool
) -> None:
    if truncate:
        return
    too_long = []
    for i, record in enumerate(records):
        for j, caption in enumerate(record.captions):
            n = _count_tokens(tokenizer, caption)
            if n is not None and n > context_length:
                too_long.append((i, j, caption, n))
    if too_long:
        shown = "; ".join(
            f"image {i} caption {j} {c!r} ({n} tokens)" for i, j, c, n in too_long[:3]
        )
        raise ValueError(
            f"Expected every caption to fit the context length {context_length} (SOT + tokens + "
            f"EOT), but got {len(too_long)} that do not: {shown}. Shorten them, use a model with a "
            "longer context, or pass truncate=True."
        )


def _map_box(box: Box, size: tuple[int, int], image_size: int, resize_mode: str) -> Box | None:
    """A box of a ``size = (w, h)`` image through open_clip's eval transform (resize + crop)."""
    w, h = size
    if resize_mode == "squash":
        sx, sy, left, top = image_size / w, image_size / h, 0.0, 0.0
    elif resize_mode == "shortest":
        # torchvision Resize(int): short side -> image_size, long side floored; CenterCrop rounds
        if w <= h:
            new_w, new_h = image_size, int(image_size * h / w)
        else:
            new_w, new_h = int(image_size * w / h), image_size
        sx, sy = new_w / w, new_h / h
        left, top = round((new_w - image_size) / 2.0), round((new_h - image_size) / 2.0)
    else:
        raise ValueError(
            f"Expected the model's resize_mode to be 'shortest' or 'squash' for boxes, but got "
            f"{resize_mode!r}."
        )
    x0, y0, x1, y1 = box
    mapped = (
        min(max(x0 * sx - left, 0.0), image_size),
        min(max(y0 * sy - top, 0.0), image_size),
        min(max(x1 * sx - left, 0.0), image_size),
        min(max(y1 * sy - top, 0.0), image_size),
    )
    if mapped[2] - mapped[0] < 1.0 or mapped[3] - mapped[1] < 1.0:
        return None  # cropped away
    return mapped


def _check_phrase(caption: str, phrase: PhraseBox, where: str) -> None:
    start, end = phrase.char_span
    if not 0 <= start < end <= len(caption) or caption[start:end] != phrase.phrase:
        raise ValueError(
            f"Expected the phrase {phrase.phrase!r} at characters {phrase.char_span} of {where} "
            f"{caption!r}, but got {caption[max(start, 0) : max(end, 0)]!r} there."
        )
    for name, box in (("box", phrase.box), ("distractor_box", phrase.distractor_box)):
        if box is not None and not (len(box) == 4 and box[0] < box[2] and box[1] < box[3]):
            raise ValueError(
                f"Expected `{name}` of {phrase.phrase!r} to be (x0, y0, x1, y1) with x0 < x1 and "
                f"y0 < y1, but got {box!r}."
            )


# ----------------------------------------------------------------------------- dataset
class CaptionDataset(Dataset):
    """Image–caption pairs of a split; item = ``(image, tokens, index)`` (see the module doc).

    Subclasses for generated images override :meth:`load_image`; the default opens
    ``record.image`` with PIL and applies ``transform`` (open_clip's preprocessing).

    Args:
        records: one :class:`CaptionRecord` per image.
        tokenizer: open_clip tokenizer (``tokenizer(list[str]) -> (B, S)``).
        context_length: the model's S; captions longer than it raise (unless ``truncate``).
        transform: PIL image → normalised ``(C, H, W)`` tensor.
        image_size: side of the preprocessed image (boxes are mapped to it).
        resize_mode: open_clip's eval resize mode (``"shortest"`` or ``"squash"``), for boxes.
        truncate: cut long captions at the context length instead of raising.
    """

    def __init__(
        self,
        records: Sequence[CaptionRecord],
        tokenizer: Any,
        context_length: int,
        transform: Callable[[Any], Tensor] | None = None,
        image_size: int = 224,
        resize_mode: str = "shortest",
        truncate: bool = False,
    ) -> None:
        if len(records) == 0:
            raise ValueError("Expected at least one image with captions, but got none.")
        for i, record in enumerate(records):
            if not record.captions or not all(
                isinstance(c, str) and c.strip() for c in record.captions
            ):
                raise ValueError(
                    f"Expected image {i} ({record.image}) to have non-empty captions, but got "
                    f"{record.captions!r}."
                )
            for j, phrases in enumerate(record.phrases):
                for phrase in phrases:
                    _check_phrase(record.captions[j], phrase, f"image {i} caption {j}")
        _check_context(tokenizer, records, context_length, truncate)
        self.records = list(records)
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.transform = transform
        self.image_size = image_size
        self.resize_mode = resize_mode
        self.pairs = [(i, j) for i, r in enumerate(self.records) for j in range(len(r.captions))]
        self.image_of_pair = torch.tensor([i for i, _ in self.pairs], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def num_images(self) -> int:
        """Images in the split (``index`` runs over ``range(num_images)``)."""
        return len(self.records)

    def captions(self, index: int) -> tuple[str, ...]:
        """All captions of image ``index``."""
        return self.records[index].captions

    def tokenize(self, captions: Sequence[str]) -> Tensor:
        """``(len(captions), S)`` long tokens."""
        return self.tokenizer(list(captions)).long()

    def load_image(self, index: int) -> Tensor:
        """Normalised ``(C, H, W)`` image ``index``."""
        from PIL import Image

        path = self.records[index].image
        if path is None or self.transform is None:
            raise ValueError(
                f"Expected image {index} to have a file and a transform, but got none."
            )
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")  # decodes: a truncated file fails here
        except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for broken files
            raise ValueError(
                f"Expected an image file at {path} (image {index}), but it could not be read "
                f"({type(err).__name__}: {err})."
            ) from None
        return self.transform(rgb)

    def image_size_of(self, index: int) -> tuple[int, int]:
        """Original ``(width, height)`` of image ``index`` (what its boxes refer to)."""
        record = self.records[index]
        if record.size is not None:
            return record.size
        if record.image is None:
            raise ValueError(
                f"Expected image {index} to have a file or a recorded size, but got neither."
            )
        from PIL import Image

        with Image.open(record.image) as img:
            return img.size

    def __getitem__(self, pair: int) -> tuple[Tensor, Tensor, int]:
        index, j = self.pairs[pair]
        tokens = self.tokenize([self.records[index].captions[j]])[0]
        return self.load_image(index), tokens, index

    # ------------------------------------------------------------------ probes
    def _token_span(self, caption: str, span: tuple[int, int]) -> tuple[int, int]:
        """Token positions of ``caption[span[0]:span[1]]`` (SOT = 0) by tokenising prefixes.

        Exact for open_clip's BPE, which never merges across the word boundaries the phrase
        starts and ends at."""
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None:  # a HF tokenizer: count the non-padding tokens of each prefix

            def count(text: str) -> int:
                return int((self.tokenize([text])[0] != 0).sum()) - 2 if text.strip() else 0
        else:

            def count(text: str) -> int:
                return len(encode(text))

        start, end = span
        return 1 + count(caption[:start]), 1 + count(caption[:end])

    def probe(self, pair: int, phrase: int = 0) -> GroundingProbe:
        """The grounding probe of phrase ``phrase`` of caption pair ``pair``."""
        fields = self._probe_fields(pair, phrase)
        return GroundingProbe(image=self.load_image(fields["index"]), **fields)

    def _probe_fields(self, pair: int, phrase: int) -> dict[str, Any]:
        """Every field of :meth:`probe` but the image (raises where the probe is unusable)."""
        index, j = self.pairs[pair]
        record = self.records[index]
        if j >= len(record.phrases) or phrase >= len(record.phrases[j]):
            raise ValueError(
                f"Expected caption pair {pair} to have a phrase {phrase} with a box, but it has "
                f"{len(record.phrases[j]) if j < len(record.phrases) else 0}."
            )
        item = record.phrases[j][phrase]
        size = self.image_size_of(index)
        box = _map_box(item.box, size, self.image_size, self.resize_mode)
        if box is None:
            raise ValueError(
                f"Expected the box of {item.phrase!r} inside the cropped image, but it is cropped away."
            )
        distractor = None
        if item.distractor_box is not None:
            mapped = _map_box(item.distractor_box, size, self.image_size, self.resize_mode)
            distractor = None if mapped is None else torch.tensor(mapped)
        caption = record.captions[j]
        token_span = self._token_span(caption, item.char_span)
        if token_span[1] > self.context_length - 1:
            raise ValueError(
                f"Expected the phrase {item.phrase!r} within the context length "
                f"{self.context_length}, but its tokens end at {token_span[1]}."
            )
        return {
            "caption": caption,
            "phrase": item.phrase,
            "char_span": item.char_span,
            "token_span": token_span,
            "box": torch.tensor(box),
            "distractor_box": distractor,
            "index": index,
        }

    def probe_candidates(self) -> list[tuple[int, int]]:
        """``(pair, phrase)`` of every phrase with a box, in dataset order."""
        out = []
        for pair, (index, j) in enumerate(self.pairs):
            phrases = self.records[index].phrases
            if j < len(phrases):
                out += [(pair, k) for k in range(len(phrases[j]))]
        return out

    def draw_probe_indices(self, num: int, generator: torch.Generator) -> list[tuple[int, int]]:
        """``(pair, phrase)`` keys of ``num`` probes (:meth:`probe` loads one): the
        :meth:`probe_candidates` in the order of ``torch.randperm(..., generator=generator)``,
        at most one per image, skipping phrases whose box the preprocessing crops away.

        The draw every grounding monitor and :meth:`CaptionDataModule.probes` use
        (:func:`~lico_lightning.data.draw_probe_indices`): one seed, one probe set.

        Args:
            num: probes to draw (fewer when the split has fewer usable images).
            generator: a seeded ``torch.Generator``.
        """
        check_int("num", num, 1)
        candidates = self.probe_candidates()
        if not candidates:
            raise ValueError("Expected phrases with boxes in this split for probes, but got none.")
        chosen: list[tuple[int, int]] = []
        seen: set[int] = set()
        outside = 0
        for k in random_order(len(candidates), generator):
            pair, phrase = candidates[k]
            index = self.pairs[pair][0]
            if index in seen:
                continue
            try:
                self._probe_fields(pair, phrase)
            except ValueError:  # the box lies outside the image or is cropped away
                outside += 1
                continue
            seen.add(index)
            chosen.append((pair, phrase))
            if len(chosen) == num:
                break
        if not chosen:
            raise ValueError(
                f"Expected phrase boxes inside the (preprocessed) images for probes, but all "
                f"{outside} boxes tried lie outside them or are cropped away."
            )
        if outside:
            warnings.warn(
                f"{outside} phrase(s) were skipped as probes: their boxes lie outside the "
                "(preprocessed) image or are cropped away by the center crop.",
                stacklevel=2,
            )
        return chosen

    def draw_probes(self, num: int, generator: torch.Generator) -> list[GroundingProbe]:
        """The :class:`GroundingProbe` items of :meth:`draw_probe_indices`.

        Args:
            num: probes to draw.
            generator: a seeded ``torch.Generator``.
        """
        return [
            self.probe(pair, phrase) for pair, phrase in self.draw_probe_indices(num, generator)
        ]


# ----------------------------------------------------------------------------- data module
class CaptionDataModule(pl.LightningDataModule):
    """Base of the caption data modules (not used directly): loaders, resumable shuffling.

    Subclasses build ``train_dataset`` / ``val_dataset`` / ``test_dataset``
    (:class:`CaptionDataset`) in ``setup``. Every caption data module exposes ``image_size``,
    ``mean``, ``std``, ``context_length`` and, through the optional ``zeroshot`` data module
    (an image classification data module such as :class:`~lico_lightning.data.DigitsDataModule`),
    ``class_names`` for zero-shot accuracy: its validation / test loader is then the second
    loader of ``val_dataloader()`` / ``test_dataloader()``.

    Training order is a pure function of ``(seed, epoch)`` (:class:`ResumableRandomSampler`).
    The subclass's constructor arguments but ``zeroshot`` are its ``hparams`` (saved here).
    """

    train_dataset: CaptionDataset | None
    val_dataset: CaptionDataset | None
    test_dataset: CaptionDataset | None

    def __init__(
        self,
        *,
        model_name: str,
        model_cfg: dict[str, Any] | None,
        batch_size: int,
        num_workers: int,
        seed: int,
        truncate: bool,
        zeroshot: pl.LightningDataModule | None,
    ) -> None:
        super().__init__()
        # the subclass's arguments (zeroshot, a data module, is not a hyperparameter)
        save_subclass_hparams(self, ignore=["zeroshot"])
        check_loader_options(batch_size, num_workers, seed)
        if zeroshot is not None and not hasattr(zeroshot, "class_names"):
            raise TypeError(
                "Expected `zeroshot` to be an image classification data module with "
                f"`class_names`, but got {type(zeroshot).__name__}."
            )
        self.preprocessing = open_clip_preprocessing(model_name, model_cfg)
        self.model_name = model_name
        self.image_size: int = self.preprocessing["image_size"]
        self.mean: tuple[float, ...] = self.preprocessing["mean"]
        self.std: tuple[float, ...] = self.preprocessing["std"]
        self.context_length: int = self.preprocessing["context_length"]
        self.tokenizer = self.preprocessing["tokenizer"]
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.truncate = truncate
        self.zeroshot = zeroshot
        self.train_dataset = self.val_dataset = self.test_dataset = None
        self.train_sampler: ResumableRandomSampler | None = None

    @property
    def class_names(self) -> list[str] | None:
        """Class names of the zero-shot data module, or ``None``."""
        return None if self.zeroshot is None else list(self.zeroshot.class_names)

    def transform(self, train: bool) -> Callable[[Any], Tensor]:
        """open_clip's preprocessing for this model (train: its random resized crop)."""
        return open_clip_helpers.image_transform(self.preprocessing, train)

    def _dataset(self, records: Sequence[CaptionRecord], train: bool) -> CaptionDataset:
        return CaptionDataset(
            records,
            self.tokenizer,
            self.context_length,
            transform=self.transform(train),
            image_size=self.image_size,
            resize_mode=self.preprocessing["resize_mode"],
            truncate=self.truncate,
        )

    def setup(self, stage: str | None = None) -> None:
        zeroshot: Any = self.zeroshot
        if zeroshot is not None:
            zeroshot.setup(stage)

    def probes(self, num: int, seed: int = 0, split: str = "val") -> list[GroundingProbe]:
        """``num`` grounding probes drawn once (seeded, one per image) from a split's phrases
        with boxes — the set a grounding monitor with ``seed=seed`` explains
        (:meth:`CaptionDataset.draw_probes` with ``torch.Generator().manual_seed(seed)``)."""
        check_choice("split", split, ("train", "val", "test"))
        stage = {"train": "fit", "val": "validate", "test": "test"}[split]
        dataset = getattr(self, f"{split}_dataset")
        if dataset is None:
            self.setup(stage)
            dataset = getattr(self, f"{split}_dataset")
        return dataset.draw_probes(num, torch.Generator().manual_seed(seed))

    def _loader(self, dataset: Dataset | None, stage: str, sampler: Any = None) -> DataLoader:
        if dataset is None:
            raise RuntimeError(
                f"Expected `setup({stage!r})` to run before asking for the {stage} dataloader."
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled pairs (order a pure function of ``(seed, epoch)``)."""
        dataset = self.train_dataset
        n = 0 if dataset is None else len(dataset)
        self.train_sampler = ResumableRandomSampler(max(n, 1), seed=self.seed)
        return self._loader(dataset, "fit", self.train_sampler)

    def _eval_loaders(self, dataset: Dataset | None, stage: str) -> Any:
        loader = self._loader(dataset, stage)
        if self.zeroshot is None:
            return loader
        extra = (
            self.zeroshot.val_dataloader()
            if stage == "validate"
            else self.zeroshot.test_dataloader()
        )
        return [loader, extra]

    def val_dataloader(self) -> Any:
        """Validation pairs in order (plus the zero-shot loader when ``zeroshot`` is set)."""
        return self._eval_loaders(self.val_dataset, "validate")

    def test_dataloader(self) -> Any:
        """Test pairs in order (plus the zero-shot loader when ``zeroshot`` is set)."""
        return self._eval_loaders(self.test_dataset, "test")

    def _split_config(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def state_dict(self) -> dict[str, Any]:
        return {"split": self._split_config()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        warn_if_resumed_differently(self, state_dict.get("split"), self._split_config())


def _resolve(root: str | Path, path: str | Path) -> str:
    p = Path(path)
    return str(p if p.is_absolute() else Path(root) / p)
