"""The embedded offline caption default: generated shape scenes with relational captions and boxes."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from lico_lightning._validation import check_int
from lico_lightning.data._captions import (
    CaptionDataModule,
    CaptionDataset,
    CaptionRecord,
    PhraseBox,
)

__all__ = ["SHAPE_COLOURS", "SHAPE_NAMES", "SHAPE_SIZES", "ShapesCaptionDataModule"]

SHAPE_NAMES = ("circle", "square", "triangle", "diamond", "cross")
SHAPE_COLOURS = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.75, 0.2),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.9, 0.1),
    "purple": (0.6, 0.2, 0.8),
    "orange": (1.0, 0.55, 0.0),
    "white": (0.95, 0.95, 0.95),
    "cyan": (0.1, 0.85, 0.9),
}
# radius as a fraction of the image side
SHAPE_SIZES = {"small": 0.09, "medium": 0.13, "large": 0.18}
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


@dataclass(frozen=True)
class _Shape:
    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    r: float

    @property
    def words(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


def _mask(shape: _Shape, n: int) -> Tensor:
    """``(n, n)`` bool mask of the shape at pixel centres."""
    coords = torch.arange(n, dtype=torch.float32) + 0.5
    y, x = coords[:, None], coords[None, :]
    dx, dy, r = x - shape.cx, y - shape.cy, shape.r
    if shape.shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape.shape == "square":
        return (dx.abs() <= 0.85 * r) & (dy.abs() <= 0.85 * r)
    if shape.shape == "diamond":
        return dx.abs() + dy.abs() <= r
    if shape.shape == "triangle":  # apex up
        return (dy >= -r) & (dy <= 0.8 * r) & (dx.abs() <= (dy + r) * 0.6)
    return ((dx.abs() <= r / 3) & (dy.abs() <= r)) | ((dy.abs() <= r / 3) & (dx.abs() <= r))


def _box(mask: Tensor) -> tuple[float, float, float, float]:
    rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _relation(a: _Shape, b: _Shape) -> str:
    """Where ``a`` is relative to ``b`` along the dominant axis (image y grows downwards)."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


#: distinct (colour, shape) kinds: the most shapes a scene can hold
MAX_SHAPE_KINDS = len(SHAPE_COLOURS) * len(SHAPE_NAMES)
#: placement tries per shape before a scene is declared not to fit
_TRIES_PER_SHAPE = 2000


def _layout(rng: random.Random, n: int, max_objects: int) -> list[_Shape]:
    """2..max_objects non-overlapping shapes with distinct (colour, shape); the first two are
    the captioned pair, placed so that their relation is unambiguous.

    Raises ``ValueError`` (saying how many shapes fit at this image size) when the shapes
    cannot be placed, instead of trying forever.
    """
    count = rng.randint(2, max_objects)
    kinds = rng.sample([(c, s) for c in SHAPE_COLOURS for s in SHAPE_NAMES], count)
    shapes = _place(rng, n, kinds)
    if shapes is None:
        fits = 1  # the largest prefix of these kinds that places, searched upwards (fast)
        while fits + 1 < count and _place(random.Random(fits), n, kinds[: fits + 1]) is not None:
            fits += 1
        raise ValueError(
            f"Expected `max_objects` shapes to fit without overlap in a {n}x{n} image, but "
            f"{count} could not be placed in {_TRIES_PER_SHAPE * count} tries (about {fits} fit "
            f"at this size): lower `max_objects` or use a model with a larger image size."
        )
    return shapes


def _place(rng: random.Random, n: int, kinds: list[tuple[str, str]]) -> list[_Shape] | None:
    """Rejection-sample one shape per kind; ``None`` after too many tries."""
    count, tries = len(kinds), 0
    shapes: list[_Shape] = []
    while len(shapes) < count:
        tries += 1
        if tries > _TRIES_PER_SHAPE * count:
            return None
        colour, name = kinds[len(shapes)]
        size = rng.choice(list(SHAPE_SIZES))
        r = SHAPE_SIZES[size] * n
        cx, cy = rng.uniform(r + 1, n - r - 1), rng.uniform(r + 1, n - r - 1)
        cand = _Shape(name, colour, size, cx, cy, r)
        if any(
            (cand.cx - s.cx) ** 2 + (cand.cy - s.cy) ** 2 < (cand.r + s.r + 2) ** 2 for s in shapes
        ):
            continue
        if len(shapes) == 1:
            first = shapes[0]
            ddx, ddy = abs(cand.cx - first.cx), abs(cand.cy - first.cy)
            if max(ddx, ddy) < 1.5 * min(ddx, ddy):  # diagonal: relation would be ambiguous
                continue
        shapes.append(cand)
    return shapes


def _scene_record(shapes: list[_Shape], n: int) -> CaptionRecord:
    a, b = shapes[0], shapes[1]
    boxes = {id(s): _box(_mask(s, n)) for s in shapes}
    captions, phrases = [], []
    for first, second, rel in ((a, b, _relation(a, b)), (b, a, _INVERSE[_relation(a, b)])):
        caption = f"a {first.words} {rel} a {second.words}"
        s1 = 2
        s2 = len(caption) - len(second.words)
        captions.append(caption)
        phrases.append(
            (
                PhraseBox(
                    first.words, (s1, s1 + len(first.words)), boxes[id(first)], boxes[id(second)]
                ),
                PhraseBox(second.words, (s2, len(caption)), boxes[id(second)], boxes[id(first)]),
            )
        )
    return CaptionRecord(image=None, captions=tuple(captions), phrases=tuple(phrases), size=(n, n))


class _ShapesDataset(CaptionDataset):
    """Scenes rendered on the fly from their stored layout (no files, no image cache)."""

    def __init__(
        self, layouts: list[list[_Shape]], noise_seed: int, mean, std, **kwargs: Any
    ) -> None:
        n = kwargs["image_size"]
        super().__init__([_scene_record(s, n) for s in layouts], **kwargs)
        self.layouts = layouts
        self.noise_seed = noise_seed
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def render(self, index: int) -> Tensor:
        """``(3, H, W)`` image in ``[0, 1]`` (dark noisy background, flat-coloured shapes)."""
        n = self.image_size
        g = torch.Generator().manual_seed(self.noise_seed * 1_000_003 + index)
        image = (0.1 + 0.03 * torch.randn(3, n, n, generator=g)).clamp_(0, 1)
        for shape in self.layouts[index]:
            colour = torch.tensor(SHAPE_COLOURS[shape.colour]).view(3, 1, 1)
            image = torch.where(_mask(shape, n), colour, image)
        return image

    def load_image(self, index: int) -> Tensor:
        return (self.render(index) - self.mean) / self.std


class ShapesCaptionDataModule(CaptionDataModule):
    """Generated scenes of coloured shapes with relational captions and exact phrase boxes.

    The embedded offline default for CLIP fine-tuning: no files, no download; scene ``i`` of a
    split is a pure function of ``(seed, split, i)``. Each scene holds 2–``max_objects`` shapes
    (5 shapes × 8 colours × 3 sizes, distinct colour+shape, non-overlapping); the first two are
    described by two captions, one from each side of their relation::

        "a small red circle left of a large blue square"
        "a large blue square right of a small red circle"

    A third shape, when there is one, is clutter no caption mentions. Every noun phrase
    ("small red circle") has its exact box (the bounding box of the rendered pixels) and, as
    distractor, the other described shape's box. About 57 000 captioned compositions: in 1000
    scenes they rarely repeat (the tests check it). Images are rendered at the model's image
    size and normalised with its open_clip mean/std; captions fit a context of 16 tokens.

    Args:
        model_name: open_clip model whose preprocessing (image size, mean/std, tokenizer) to use.
        model_cfg: an open_clip config dict instead (tiny models trained from scratch).
        num_train: training scenes (2 caption pairs each).
        num_val: validation scenes.
        num_test: test scenes.
        max_objects: shapes per scene at most (2 or more; the first two are captioned).
        batch_size: batch size of every loader.
        num_workers: DataLoader workers (0 is fast: rendering is cheap).
        seed: seed of the scenes and of the training order.
        zeroshot: optional image classification data module for zero-shot accuracy.

    Example:
        >>> from lico_lightning.text import tiny_openclip_config
        >>> dm = ShapesCaptionDataModule(model_cfg=tiny_openclip_config(context_length=16),
        ...                              num_train=8, num_val=4, num_test=4, batch_size=4)
        >>> dm.setup("fit")
        >>> images, tokens, index = next(iter(dm.val_dataloader()))
        >>> images.shape, tokens.shape, index.tolist()
        (torch.Size([4, 3, 32, 32]), torch.Size([4, 16]), [0, 0, 1, 1])
        >>> dm.val_dataset.captions(0)
        ('a small red circle above a medium yellow cross', 'a medium yellow cross below a small red circle')
        >>> probe = dm.val_dataset.probe(0, phrase=1)
        >>> probe.phrase, probe.token_span, probe.box.tolist()
        ('medium yellow cross', (7, 10), [7.0, 21.0, 15.0, 29.0])
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        model_cfg: dict[str, Any] | None = None,
        num_train: int = 4000,
        num_val: int = 500,
        num_test: int = 500,
        max_objects: int = 3,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        zeroshot: pl.LightningDataModule | None = None,
    ) -> None:
        super().__init__(
            model_name=model_name,
            model_cfg=model_cfg,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            truncate=False,
            zeroshot=zeroshot,
        )
        for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            check_int(name, value, 1)
        check_int("max_objects", max_objects, 2)
        if max_objects > MAX_SHAPE_KINDS:
            raise ValueError(
                f"Expected `max_objects` <= {MAX_SHAPE_KINDS} (the distinct colour-shape kinds a "
                f"scene can hold), but got {max_objects}."
            )
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.max_objects = max_objects

    def _split_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "num_train": self.num_train, "max_objects": self.max_objects}

    def make_dataset(self, split: str) -> CaptionDataset:
        """The ``"train"`` / ``"val"`` / ``"test"`` split (scenes generated now, rendered lazily)."""
        offset = {"train": 0, "val": 1, "test": 2}[split]
        count = {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]
        rng = random.Random(f"shapes-{self.seed}-{split}")
        layouts = [_layout(rng, self.image_size, self.max_objects) for _ in range(count)]
        return _ShapesDataset(
            layouts,
            noise_seed=self.seed * 3 + offset,
            mean=self.mean,
            std=self.std,
            tokenizer=self.tokenizer,
            context_length=self.context_length,
            image_size=self.image_size,
        )

    def setup(self, stage: str | None = None) -> None:
        """Generate the split layouts (cheap: ~1 ms per scene)."""
        super().setup(stage)
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self.make_dataset("train")
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            self.val_dataset = self.make_dataset("val")
        if stage in (None, "test", "predict") and self.test_dataset is None:
            self.test_dataset = self.make_dataset("test")
