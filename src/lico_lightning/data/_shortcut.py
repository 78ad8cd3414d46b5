"""A generated shortcut benchmark for classifiers: the label is the shape of one target object,
a coloured marker in a corner agrees with it at a chosen rate, and every object can be removed
by re-rendering the scene without it (ground truth by construction)."""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lico_lightning._validation import check_bool, check_choice, check_int, check_real
from lico_lightning.data._base import ImageDataModule
from lico_lightning.data._shapes import SHAPE_COLOURS, SHAPE_NAMES, SHAPE_SIZES, _box, _mask, _Shape

__all__ = ["CUE_COLOURS", "SHORTCUT_SPLITS", "ShortcutDataModule", "ShortcutDataset"]

#: The cue marker's colour of each class (class ``c`` -> ``CUE_COLOURS[c]``). No shape is ever
#: drawn in these colours (shapes use ``SHAPE_COLOURS``; every cue colour is >= 0.35 away from
#: every shape colour and from the dark background), so only the marker carries them.
CUE_COLOURS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.6, 0.8),  # pink
    (0.55, 0.55, 0.55),  # grey
    (0.6, 0.35, 0.1),  # brown
    (0.6, 1.0, 0.35),  # lime
    (0.1, 0.1, 0.5),  # navy
)
#: ``train`` / ``val`` / ``test``: the cue agrees with the label with probability
#: ``cue_correlation``; ``shifted``: the cue colour is uniform over the classes, independent of
#: the label; ``anti``: the cue colour is uniform over the *other* classes (never agrees).
SHORTCUT_SPLITS = ("train", "val", "test", "shifted", "anti")
_SPLIT_CODE = {name: i for i, name in enumerate(SHORTCUT_SPLITS)}
_TARGET_SIZES = ("medium", "large")
_DISTRACTOR_SIZE = "small"
_MAX_DISTRACTORS = 6
_BACKGROUND, _NOISE = 0.1, 0.03


@dataclass(frozen=True)
class _Scene:
    """Everything a scene is; the image and its annotations are pure functions of it."""

    label: int
    cue_label: int
    target: _Shape
    distractors: tuple[_Shape, ...]
    cue_box: tuple[int, int, int, int]  # (x1, y1, x2, y2), pixel edges
    noise_seed: int


def _cue_box(rng: random.Random, n: int) -> tuple[int, int, int, int]:
    """A ``round(n/4) x round(0.09 n)`` bar 1 px from a random corner."""
    w, h = max(3, round(0.25 * n)), max(2, round(0.09 * n))
    left, top = rng.random() < 0.5, rng.random() < 0.5
    x1 = 1 if left else n - 1 - w
    y1 = 1 if top else n - 1 - h
    return x1, y1, x1 + w, y1 + h


def _clear_of(shape: _Shape, others: Sequence[_Shape], box: tuple[int, int, int, int]) -> bool:
    """``shape``'s bounding circle keeps 2 px from every other shape's and from the cue box."""
    if any(
        (shape.cx - s.cx) ** 2 + (shape.cy - s.cy) ** 2 < (shape.r + s.r + 2) ** 2 for s in others
    ):
        return False
    x1, y1, x2, y2 = box
    dx = max(x1 - shape.cx, 0.0, shape.cx - x2)
    dy = max(y1 - shape.cy, 0.0, shape.cy - y2)
    return math.hypot(dx, dy) >= shape.r + 2


def _place(rng: random.Random, n: int, name: str, size: str) -> _Shape:
    r = SHAPE_SIZES[size] * n
    cx, cy = rng.uniform(r + 1, n - r - 1), rng.uniform(r + 1, n - r - 1)
    return _Shape(name, rng.choice(list(SHAPE_COLOURS)), size, cx, cy, r)


def _scene(
    seed: int, split: str, index: int, n: int, num_classes: int, rho: float, num_distractors: int
) -> _Scene:
    """Scene ``index`` of ``split``: a pure function of its arguments (its own RNG)."""
    rng = random.Random(f"shortcut-{seed}-{split}-{index}")
    label = rng.randrange(num_classes)
    others = [c for c in range(num_classes) if c != label]
    if split == "anti":
        cue_label = rng.choice(others)
    elif split == "shifted":
        cue_label = rng.randrange(num_classes)
    else:
        cue_label = label if rng.random() < rho else rng.choice(others)
    cue_box = _cue_box(rng, n)
    for _ in range(10_000):  # rejection sampling; a few tries in practice
        target = _place(rng, n, SHAPE_NAMES[label], rng.choice(_TARGET_SIZES))
        if not _clear_of(target, (), cue_box):
            continue
        placed: list[_Shape] = [target]
        for _ in range(100 * (num_distractors + 1)):
            if len(placed) == num_distractors + 1:
                break
            cand = _place(rng, n, rng.choice(SHAPE_NAMES), _DISTRACTOR_SIZE)
            if _clear_of(cand, placed, cue_box):
                placed.append(cand)
        if len(placed) == num_distractors + 1:
            noise_seed = rng.getrandbits(62)
            return _Scene(label, cue_label, target, tuple(placed[1:]), cue_box, noise_seed)
    raise RuntimeError(  # pragma: no cover - guarded by the image_size / num_distractors checks
        f"Could not place {num_distractors} distractors in a {n}x{n} scene; use fewer."
    )


class ShortcutDataset(Dataset):
    """One split of the shortcut benchmark (see :class:`ShortcutDataModule`); scenes are
    generated and rendered when asked for, each a pure function of ``(seed, split, index)``.

    Item ``i`` is ``(image, label, ground_truth)`` (``(image, label, i, ground_truth)`` with
    ``return_index=True``; without ``ground_truth`` with ``with_ground_truth=False``).
    ``ground_truth`` is a dict of fixed-shape tensors, so the default collate stacks it; with
    ``O = 2 + num_distractors`` objects in the order :attr:`object_names`
    (``target, cue, distractor_0, …``):

    * ``target_box`` ``(4,)``, ``cue_box`` ``(4,)``, ``distractor_boxes`` ``(D, 4)``,
      ``object_boxes`` ``(O, 4)``: exact boxes ``(x1, y1, x2, y2)`` in pixel edges (the bounding
      box of the rendered pixels, the convention of ``functional.pointing_game``);
    * ``target_mask``, ``cue_mask``, ``distractor_mask`` (union) ``(H, W)`` and
      ``object_masks`` ``(O, H, W)``: bool masks of the rendered pixels;
    * ``cue_label`` (the class whose cue colour the marker has), ``cue_agrees`` (bool),
      ``group`` = ``2 * label + cue_agrees`` (``num_groups = 2 * num_classes``).

    Args:
        split: one of :data:`SHORTCUT_SPLITS`.
        size: number of scenes.
        num_classes: target shapes ``SHAPE_NAMES[:num_classes]`` (2 to 5).
        cue_correlation: probability that the cue agrees with the label (``train``/``val``/
            ``test``; ignored by ``shifted`` and ``anti``).
        num_distractors: small shapes of any kind and colour beside the target (0 to 6).
        image_size: side of the square images (at least 24).
        mean: per-channel mean for normalisation.
        std: per-channel std for normalisation.
        seed: seed of the scenes.
        return_index: put the index after the label.
        with_ground_truth: append the ``ground_truth`` dict.
        with_counterfactuals: add ``counterfactuals`` ``(O, 3, H, W)`` (:meth:`counterfactuals`
            of every object) to the ``ground_truth`` dict, for the evaluation's
            ``object_effects`` and reliances (``O`` extra renders per item; the
            ``SaliencyMonitor`` renders its probes' itself, so training data need not).

    Example:
        >>> ds = ShortcutDataset("train", 10, num_classes=3, cue_correlation=0.9, num_distractors=2)
        >>> image, label, gt = ds[0]
        >>> image.shape, int(label), ds.object_names
        (torch.Size([3, 32, 32]), 0, ('target', 'cue', 'distractor_0', 'distractor_1'))
        >>> gt["target_box"].tolist(), gt["cue_box"].tolist(), bool(gt["cue_agrees"])
        ([17.0, 9.0, 29.0, 20.0], [1.0, 28.0, 9.0, 31.0], True)
        >>> no_cue = ds.render(0, remove=("cue",))
        >>> changed = (no_cue != image).any(0)
        >>> bool(changed[~gt["cue_mask"]].any())  # only the cue's pixels changed
        False
        >>> ds.counterfactuals(0).shape  # the scene without each object, in object_names order
        torch.Size([4, 3, 32, 32])
    """

    def __init__(
        self,
        split: str,
        size: int,
        *,
        num_classes: int = 3,
        cue_correlation: float = 0.9,
        num_distractors: int = 2,
        image_size: int = 32,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
        seed: int = 0,
        return_index: bool = False,
        with_ground_truth: bool = True,
        with_counterfactuals: bool = False,
    ) -> None:
        check_choice("split", split, SHORTCUT_SPLITS)
        check_int("size", size, 1)
        _check_benchmark(num_classes, cue_correlation, num_distractors, image_size)
        check_int("seed", seed, 0)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(
                f"Expected `mean` and `std` with 3 values, but got {len(mean)} and {len(std)}."
            )
        self.split = split
        self.size = size
        self.num_classes = num_classes
        self.cue_correlation = float(cue_correlation)
        self.num_distractors = num_distractors
        self.image_size = image_size
        self.seed = seed
        self.return_index = check_bool("return_index", return_index)
        self.with_ground_truth = check_bool("with_ground_truth", with_ground_truth)
        self.with_counterfactuals = check_bool("with_counterfactuals", with_counterfactuals)
        if with_counterfactuals and not with_ground_truth:
            raise ValueError(
                "Expected `with_counterfactuals=True` only with `with_ground_truth=True` (they "
                "travel in the ground_truth dict), but got with_ground_truth=False."
            )
        self._mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    # ----------------------------------------------------------------- scene
    @property
    def object_names(self) -> tuple[str, ...]:
        """``("target", "cue", "distractor_0", …)``: the objects of every scene, in the order
        of ``object_boxes`` / ``object_masks`` / :meth:`counterfactuals`."""
        return ("target", "cue", *(f"distractor_{j}" for j in range(self.num_distractors)))

    @property
    def num_groups(self) -> int:
        """``2 * num_classes`` groups ``2 * label + cue_agrees``."""
        return 2 * self.num_classes

    def __len__(self) -> int:
        return self.size

    def _check_index(self, index: int) -> int:
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(
                f"Expected `index` to be an int, but got {type(index).__name__}."
            ) from None
        if not 0 <= index < self.size:
            raise IndexError(
                f"Expected `index` in [0, {self.size}) ({self.split} split), but got {index}."
            )
        return index

    def _scene(self, index: int) -> _Scene:
        return _scene(
            self.seed,
            self.split,
            self._check_index(index),
            self.image_size,
            self.num_classes,
            self.cue_correlation,
            self.num_distractors,
        )

    def _object_masks(self, scene: _Scene) -> Tensor:
        """``(O, H, W)`` bool masks in ``object_names`` order."""
        n = self.image_size
        cue = torch.zeros(n, n, dtype=torch.bool)
        x1, y1, x2, y2 = scene.cue_box
        cue[y1:y2, x1:x2] = True
        shapes = [_mask(s, n) for s in (scene.target, *scene.distractors)]
        return torch.stack([shapes[0], cue, *shapes[1:]])

    def _check_remove(self, remove: Sequence[str] | str) -> set[str]:
        if isinstance(remove, str):
            remove = (remove,)
        names = self.object_names
        for name in remove:
            if name not in names:
                raise ValueError(
                    f"Expected the objects to remove among {names} (every scene holds "
                    f"{self.num_distractors} distractors), but got {name!r}."
                )
        return set(remove)

    def _draw(self, scene: _Scene, masks: Tensor, keep: Sequence[bool], normalize: bool) -> Tensor:
        n = self.image_size
        g = torch.Generator().manual_seed(scene.noise_seed)
        image = (_BACKGROUND + _NOISE * torch.randn(3, n, n, generator=g)).clamp_(0, 1)
        colours = [
            SHAPE_COLOURS[scene.target.colour],
            CUE_COLOURS[scene.cue_label],
            *(SHAPE_COLOURS[s.colour] for s in scene.distractors),
        ]
        for mask, colour, kept in zip(masks, colours, keep):
            if kept:
                image = torch.where(mask, torch.tensor(colour).view(3, 1, 1), image)
        return (image - self._mean) / self._std if normalize else image

    def render(
        self, index: int, remove: Sequence[str] | str = (), normalize: bool = True
    ) -> Tensor:
        """Scene ``index`` re-rendered without the objects in ``remove`` (names from
        :attr:`object_names`): the same background noise shows where they were, as if they had
        never been placed — an intervention, not a mask.

        Returns:
            ``(3, H, W)``: normalised with the dataset's ``mean`` / ``std``, or in ``[0, 1]``
            with ``normalize=False``.
        """
        gone = self._check_remove(remove)
        scene = self._scene(index)
        keep = [name not in gone for name in self.object_names]
        return self._draw(scene, self._object_masks(scene), keep, normalize)

    def counterfactuals(
        self, index: int, objects: Sequence[str] | None = None, normalize: bool = True
    ) -> Tensor:
        """Scene ``index`` without each of ``objects`` in turn (default: every object, in
        :attr:`object_names` order: without the target, without the cue, without each
        distractor). ``objects=("target", "cue")`` gives what target and cue reliance need:
        with the scene itself, 3 forwards per probe.

        Returns:
            ``(len(objects), 3, H, W)``, normalised unless ``normalize=False``.
        """
        names = self.object_names
        if objects is None:
            chosen = names
        else:
            chosen = (objects,) if isinstance(objects, str) else tuple(objects)
            self._check_remove(chosen)
        if not chosen:
            raise ValueError(f"Expected at least one object among {names}, but got none.")
        scene = self._scene(index)
        masks = self._object_masks(scene)
        return torch.stack(
            [self._draw(scene, masks, [n != c for n in names], normalize) for c in chosen]
        )

    def ground_truth(self, index: int) -> dict[str, Tensor]:
        """The annotations of scene ``index`` (the item's ``ground_truth`` dict)."""
        scene = self._scene(index)
        return self._ground_truth(scene, self._object_masks(scene))

    def _ground_truth(self, scene: _Scene, masks: Tensor) -> dict[str, Tensor]:
        boxes = torch.tensor([_box(m) for m in masks], dtype=torch.float32)
        agrees = scene.cue_label == scene.label
        return {
            "target_box": boxes[0],
            "cue_box": boxes[1],
            "distractor_boxes": boxes[2:],
            "object_boxes": boxes,
            "target_mask": masks[0],
            "cue_mask": masks[1],
            "distractor_mask": masks[2:].any(0),
            "object_masks": masks,
            "cue_label": torch.tensor(scene.cue_label),
            "cue_agrees": torch.tensor(agrees),
            "group": torch.tensor(2 * scene.label + int(agrees)),
        }

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        scene = self._scene(index)
        masks = self._object_masks(scene)
        image = self._draw(scene, masks, [True] * masks.shape[0], normalize=True)
        item: tuple[Any, ...] = (image, torch.tensor(scene.label))
        if self.return_index:
            item = (*item, index)
        if self.with_ground_truth:
            gt = self._ground_truth(scene, masks)
            if self.with_counterfactuals:
                names = self.object_names
                gt["counterfactuals"] = torch.stack(
                    [self._draw(scene, masks, [n != c for n in names], True) for c in names]
                )
            item = (*item, gt)
        return item


def _check_benchmark(
    num_classes: int, cue_correlation: float, num_distractors: int, image_size: int
) -> None:
    check_int("num_classes", num_classes, 2)
    if num_classes > len(SHAPE_NAMES):
        raise ValueError(
            f"Expected `num_classes` <= {len(SHAPE_NAMES)} (one class per shape: "
            f"{', '.join(SHAPE_NAMES)}), but got {num_classes}."
        )
    check_real("cue_correlation", cue_correlation, low=0.0, strict=False, high=1.0)
    check_int("num_distractors", num_distractors, 0)
    if num_distractors > _MAX_DISTRACTORS:
        raise ValueError(
            f"Expected `num_distractors` <= {_MAX_DISTRACTORS}, but got {num_distractors}."
        )
    check_int("image_size", image_size, 24)


class ShortcutDataModule(ImageDataModule):
    """A generated shortcut benchmark: is the classifier reading the target or a spurious cue?

    Offline, no files: scene ``i`` of a split is a pure function of ``(seed, split, i)``. A
    scene (dark noisy background, flat-coloured shapes from the shapes renderer of
    :class:`ShapesCaptionDataModule`) holds

    * the **target**: a medium or large shape whose kind is the label — class ``c`` is
      ``SHAPE_NAMES[c]`` (``"circle"``, ``"square"``, ``"triangle"``, ``"diamond"``,
      ``"cross"``: names a text encoder can use), in any shape colour;
    * ``num_distractors`` **distractors**: small shapes of any kind and colour;
    * the **cue**: a bar 1 px from a random corner, away from every shape, coloured
      ``CUE_COLOURS[k]`` — colours no shape ever has. ``k`` is the label with probability
      ``cue_correlation`` (else another class, uniformly) in ``train`` / ``val`` / ``test``;
      uniform over the classes, independent of the label, in ``shifted``; uniform over the other
      classes (never the label) in ``anti``.

    Items are ``(image, label, ground_truth)`` (``(image, label, index, ground_truth)`` with
    ``return_index=True``): the boxes, masks, cue label and group of
    :class:`ShortcutDataset`, stacked by the default collate (the count of distractors is
    fixed, so every tensor has a fixed shape). Models read ``batch[0]``, ``batch[1]`` as from
    any image data module; ``with_ground_truth=False`` gives the plain ``(image, label)``.
    **Counterfactuals** (``dataset.render(i, remove=("cue",))``,
    ``dataset.counterfactuals(i)``) re-render the scene without an object over the same
    background noise.

    ``mean`` / ``std`` are measured on the first 64 training scenes (so they follow
    ``image_size`` and ``num_distractors``); ``class_names`` are the shapes' names.
    ``test_dataloader`` is the in-distribution test split; :meth:`split_dataloader`
    (``"shifted"``, ``"anti"``, …) gives any split.

    Args:
        num_classes: target shapes (2 to 5).
        cue_correlation: ``P(cue agrees with the label)`` in train / val / test, in ``[0, 1]``.
        num_distractors: distractors per scene (0 to 6).
        image_size: side of the square images (at least 24).
        num_train: training scenes.
        num_val: validation scenes.
        num_test: test scenes (also the size of ``shifted`` and ``anti``).
        with_ground_truth: append the ``ground_truth`` dict to every item.
        batch_size: batch size of every loader.
        num_workers: DataLoader workers (0 is fine: rendering costs far less than a step).
        seed: seed of the scenes and of the training order.
        return_index: yield ``(image, label, index[, ground_truth])``.
        class_names: names to use instead of the shapes' names.
        train_samples_per_epoch: training samples per epoch (default: ``num_train``).

    Example:
        >>> dm = ShortcutDataModule(num_classes=3, cue_correlation=0.9, num_train=16,
        ...                         num_val=8, num_test=8, batch_size=4)
        >>> dm.class_names, dm.num_classes, dm.image_size
        (['circle', 'square', 'triangle'], 3, 32)
        >>> dm.setup("fit")
        >>> images, labels, gt = next(iter(dm.train_dataloader()))
        >>> images.shape, gt["object_boxes"].shape, gt["target_mask"].shape, gt["group"].shape
        (torch.Size([4, 3, 32, 32]), torch.Size([4, 4, 4]), torch.Size([4, 32, 32]), torch.Size([4]))
        >>> anti = dm.make_dataset("anti")
        >>> any(bool(anti[i][2]["cue_agrees"]) for i in range(len(anti)))
        False
    """

    def __init__(
        self,
        num_classes: int = 3,
        cue_correlation: float = 0.9,
        num_distractors: int = 2,
        image_size: int = 32,
        num_train: int = 4000,
        num_val: int = 500,
        num_test: int = 500,
        with_ground_truth: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        return_index: bool = False,
        class_names: list[str] | None = None,
        train_samples_per_epoch: int | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            return_index=return_index,
            train_samples_per_epoch=train_samples_per_epoch,
        )
        _check_benchmark(num_classes, cue_correlation, num_distractors, image_size)
        for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            check_int(name, value, 1)
        self.cue_correlation = float(cue_correlation)
        self.num_distractors = num_distractors
        self.image_size = image_size
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.with_ground_truth = check_bool("with_ground_truth", with_ground_truth)
        self.class_names = self._resolve_class_names(
            list(SHAPE_NAMES[:num_classes]), class_names, num_classes
        )
        sample = self._dataset("train", min(64, num_train), (0.0,) * 3, (1.0,) * 3)
        images = torch.stack([sample[i][0] for i in range(len(sample))])
        self.mean = tuple(float(m) for m in images.mean(dim=(0, 2, 3)))
        self.std = tuple(float(s) for s in images.std(dim=(0, 2, 3)))
        self.shifted_dataset: ShortcutDataset | None = None
        self.anti_dataset: ShortcutDataset | None = None

    @property
    def num_groups(self) -> int:
        """``2 * num_classes`` groups ``2 * label + cue_agrees``."""
        return 2 * self.num_classes

    def _scenes(self) -> dict[str, Any]:
        """The benchmark's settings (what :func:`_check_benchmark` checks): with ``seed`` they
        define every split's scenes, so they are both the datasets' arguments and the split."""
        return {
            "num_classes": self.num_classes,
            "cue_correlation": self.cue_correlation,
            "num_distractors": self.num_distractors,
            "image_size": self.image_size,
        }

    def _split_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "num_train": self.num_train, **self._scenes()}

    def _dataset(
        self,
        split: str,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        with_counterfactuals: bool = False,
    ) -> ShortcutDataset:
        return ShortcutDataset(
            split,
            size,
            **self._scenes(),
            mean=mean,
            std=std,
            seed=self.seed,
            return_index=self.return_index,
            with_ground_truth=self.with_ground_truth or with_counterfactuals,
            with_counterfactuals=with_counterfactuals,
        )

    def make_dataset(self, split: str, with_counterfactuals: bool = False) -> ShortcutDataset:
        """The split named ``split`` (one of :data:`SHORTCUT_SPLITS`), normalised with this
        module's ``mean`` / ``std``; ``with_counterfactuals``: its items' ground truth carries
        the scene without each object (for ``evaluate_saliency``'s ``object_effects`` and
        reliances)."""
        check_choice("split", split, SHORTCUT_SPLITS)
        size = {"train": self.num_train, "val": self.num_val}.get(split, self.num_test)
        check_bool("with_counterfactuals", with_counterfactuals)
        return self._dataset(split, size, self.mean, self.std, with_counterfactuals)

    def setup(self, stage: str | None = None) -> None:
        """Build every split (cheap: scenes are generated when an item is asked for)."""
        self.train_dataset = self.make_dataset("train")
        self.val_dataset = self.make_dataset("val")
        self.test_dataset = self.make_dataset("test")
        self.shifted_dataset = self.make_dataset("shifted")
        self.anti_dataset = self.make_dataset("anti")

    def split_dataloader(self, split: str) -> DataLoader:
        """A loader over the split named ``split``, in dataset order (``"train"`` unshuffled)."""
        return self._loader(self.make_dataset(split))

    def _with_index(self, dataset: Any) -> Any:  # the datasets return the index themselves
        return dataset
