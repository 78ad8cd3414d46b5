"""ImageFolder data modules: ImageNet and the fine-grained benchmarks with k-shot sampling."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, ClassVar

from torch.utils.data import Dataset, Subset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes

from lico_lightning._validation import check_int
from lico_lightning.data._base import ImageDataModule, with_defaults
from lico_lightning.data._class_names import (
    check_class_names,
    clean_class_name,
    load_class_names_file,
)
from lico_lightning.data._splits import class_balanced_indices
from lico_lightning.data._torchvision import _check_stage

__all__ = [
    "CUB200DataModule",
    "FGVCAircraftDataModule",
    "Flowers102DataModule",
    "ImageFolderDataModule",
    "ImageNetDataModule",
    "StanfordCarsDataModule",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_WNID = re.compile(r"^n\d{8}$")


class ImageFolderDataModule(ImageDataModule):
    """Images in ``data_dir/<split>/<class folder>/*`` (torchvision ``ImageFolder`` layout).

    Classes are the sub-folders of the training split, in sorted order (torchvision's
    ``ImageFolder`` indexing); the validation / test splits must have the same folders.
    Class names, in order of precedence: ``class_names``; ``class_names_file`` (see
    :func:`~lico_lightning.data.load_class_names_file`); the folder names, cleaned by
    :func:`~lico_lightning.data.clean_class_name` when ``clean_names`` (``"001.Black_footed_
    Albatross"`` → ``"black footed albatross"``). They are read at construction, so the data
    must be on disk then.

    ``shots=k`` keeps ``k`` training images per class, drawn uniformly without replacement
    with ``seed`` (the few-shot protocol of CGC that the paper follows, §4.1); validation and
    test are untouched. Training augmentation: ``RandomResizedCrop(image_size)`` + horizontal
    flip; evaluation: ``Resize(resize_size)`` + ``CenterCrop(image_size)``.

    Args:
        data_dir: Dataset root.
        train_dir: Training split folder under ``data_dir``.
        val_dir: Validation split folder.
        test_dir: Test split folder; ``None`` reuses the validation split.
        shots: Training images per class, or ``None`` for all.
        image_size: Crop side fed to the model.
        resize_size: Shorter side before the evaluation centre crop.
        augment: Random-resized-crop + flip for training images (else the evaluation pipeline).
        mean: Normalisation mean (ImageNet's by default).
        std: Normalisation std.
        class_names: Names overriding everything else (one per class folder).
        class_names_file: Mapping file from folder names to names.
        clean_names: Clean folder names (drop ``NNN.`` prefixes, underscores, case).
        batch_size: Batch size of every loader.
        num_workers: DataLoader workers.
        seed: Seed of the k-shot subset and of the training order.
        return_index: Yield ``(image, target, index)``.
        train_samples_per_epoch: Training samples per epoch (default: the training set size).
        pin_memory: DataLoader ``pin_memory``.

    Example:
        >>> import pathlib, tempfile
        >>> from PIL import Image
        >>> tmp = tempfile.TemporaryDirectory()
        >>> root = pathlib.Path(tmp.name)
        >>> for split in ("train", "val"):
        ...     for folder in ("001.Black_footed_Albatross", "002.Laysan_Albatross"):
        ...         (root / split / folder).mkdir(parents=True)
        ...         for i in range(3):
        ...             Image.new("RGB", (12, 10)).save(root / split / folder / f"{i}.png")
        >>> dm = ImageFolderDataModule(tmp.name, shots=2, image_size=8, resize_size=8)
        >>> dm.class_names
        ['black footed albatross', 'laysan albatross']
        >>> dm.setup("fit")
        >>> len(dm.train_dataset), dm.train_dataset[0][0].shape
        (4, torch.Size([3, 8, 8]))
        >>> tmp.cleanup()
    """

    dataset_name: ClassVar[str] = "ImageFolder"
    expected_num_classes: ClassVar[int | None] = None
    how_to_get: ClassVar[str] = (
        "Arrange the images as <data_dir>/<train_dir>/<class>/<image> and "
        "<data_dir>/<val_dir>/<class>/<image>."
    )

    def __init__(
        self,
        data_dir: str,
        train_dir: str = "train",
        val_dir: str = "val",
        test_dir: str | None = None,
        shots: int | None = None,
        image_size: int = 224,
        resize_size: int = 256,
        augment: bool = True,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        class_names: list[str] | None = None,
        class_names_file: str | None = None,
        clean_names: bool = True,
        batch_size: int = 64,
        num_workers: int = 4,
        seed: int = 0,
        return_index: bool = False,
        train_samples_per_epoch: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            return_index=return_index,
            train_samples_per_epoch=train_samples_per_epoch,
            pin_memory=pin_memory,
        )
        check_int("image_size", image_size, 1)
        check_int("resize_size", resize_size, 1)
        if shots is not None:
            check_int("shots", shots, 1)
        if class_names is not None and class_names_file is not None:
            raise ValueError(
                "Expected at most one of `class_names` and `class_names_file`, but got both."
            )
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(
                f"Expected 3 means and 3 positive stds, but got mean={mean!r}, std={std!r}."
            )
        self.data_dir = str(data_dir)
        self.split_dirs = {
            "train": train_dir,
            "val": val_dir,
            "test": val_dir if test_dir is None else test_dir,
        }
        self.shots = shots
        self.image_size = image_size
        self.resize_size = resize_size
        self.augment = augment
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.labeled_indices: list[int] | None = None

        for split in dict.fromkeys(self.split_dirs.values()):
            self._split_root(split)  # fail now, with instructions, if a split is missing
        self.folder_names, _ = find_classes(str(self._split_root(train_dir)))
        n = len(self.folder_names)
        if self.expected_num_classes is not None and n != self.expected_num_classes:
            warnings.warn(
                f"Expected {self.expected_num_classes} class folders for {self.dataset_name}, "
                f"but found {n} in {self._split_root(train_dir)}.",
                UserWarning,
                stacklevel=2,
            )
        if class_names is not None:
            names = check_class_names(class_names, n)
        elif class_names_file is not None:
            names = load_class_names_file(class_names_file, self.folder_names)
        else:
            names = [clean_class_name(f) if clean_names else f for f in self.folder_names]
            if all(_WNID.match(f) or f.strip().isdigit() for f in names):
                warnings.warn(
                    f"{self.dataset_name} class names are folder ids (e.g. {names[0]!r}), which "
                    "carry no meaning for a text encoder; pass `class_names_file` or "
                    "`class_names`.",
                    UserWarning,
                    stacklevel=2,
                )
        self.class_names = check_class_names(names, n)

    def _split_root(self, split_dir: str) -> Path:
        root = Path(self.data_dir) / split_dir
        if not root.is_dir():
            raise FileNotFoundError(
                f"Expected the {self.dataset_name} split folder {root}, but it does not exist. "
                f"{self.how_to_get}"
            )
        return root

    def _split_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "shots": self.shots, "train_dir": self.split_dirs["train"]}

    def _transforms(self, train: bool) -> T.Compose:
        if train and self.augment:
            ops: list[Any] = [T.RandomResizedCrop(self.image_size), T.RandomHorizontalFlip()]
        else:
            ops = [T.Resize(self.resize_size), T.CenterCrop(self.image_size)]
        return T.Compose([*ops, T.ToTensor(), T.Normalize(self.mean, self.std)])

    def _folder(self, split: str, train: bool) -> ImageFolder:
        ds = ImageFolder(str(self._split_root(self.split_dirs[split])), self._transforms(train))
        if ds.classes != self.folder_names:
            raise ValueError(
                f"Expected the {split} split to have the training split's {self.num_classes} "
                f"class folders, but got {len(ds.classes)} different ones in "
                f"{self.split_dirs[split]!r}."
            )
        return ds

    def setup(self, stage: str | None = None) -> None:
        """Index the image files; the training split is cut to ``shots`` per class when given."""
        _check_stage(stage)
        if stage in (None, "fit"):
            train_full = self._folder("train", train=True)
            train: Dataset = train_full
            if self.shots is not None:
                idx = class_balanced_indices(
                    train_full.targets, self.shots, seed=self.seed, num_classes=self.num_classes
                )
                self.labeled_indices = idx.tolist()
                train = Subset(train_full, self.labeled_indices)
            self.train_dataset = self._with_index(train)
        if stage in (None, "fit", "validate"):
            self.val_dataset = self._with_index(self._folder("val", train=False))
        if stage in (None, "test", "predict"):
            self.test_dataset = self._with_index(self._folder("test", train=False))


@with_defaults(clean_names=False, batch_size=128, num_workers=8)
class ImageNetDataModule(ImageFolderDataModule):
    """ImageNet-1k from ``data_dir/train`` and ``data_dir/val`` (one folder per wnid).

    The folder names are WordNet ids (``n01440764``); pass ``class_names_file`` (e.g. Keras'
    ``imagenet_class_index.json`` or Kaggle's ``LOC_synset_mapping.txt``) for readable names,
    which LICO's prompts need. Validation images must be sorted into class folders (e.g. with
    the ``valprep.sh`` script used by the PyTorch ImageNet example). Same arguments as
    :class:`ImageFolderDataModule`, with ``clean_names=False``, a batch size of 128 (paper
    §4.2) and 8 workers by default.

    Args:
        data_dir: ImageNet root.
        train_dir: Training split folder under ``data_dir``.
        val_dir: Validation split folder.
        test_dir: Test split folder; ``None`` reuses the validation split.
        shots: Training images per class, or ``None`` for all.
        image_size: Crop side fed to the model.
        resize_size: Shorter side before the evaluation centre crop.
        augment: Random-resized-crop + flip for training images.
        mean: Normalisation mean.
        std: Normalisation std.
        class_names: 1000 names overriding everything else.
        class_names_file: Mapping file from wnids to names.
        clean_names: Clean folder names (off: wnids are kept verbatim).
        batch_size: Batch size of every loader.
        num_workers: DataLoader workers.
        seed: Seed of the k-shot subset and of the training order.
        return_index: Yield ``(image, target, index)``.
        train_samples_per_epoch: Training samples per epoch (default: the training set size).
        pin_memory: DataLoader ``pin_memory``.
    """

    dataset_name = "ImageNet"
    expected_num_classes = 1000
    how_to_get = (
        "Download ILSVRC2012 from https://image-net.org/download.php (login required), extract "
        "train/ into one folder per wnid and sort val/ into the same folders."
    )


_FINE_GRAINED_DOC = """{name} as an ImageFolder tree, with k-shot sampling (paper §4.1, CGC protocol).

    Expects ``data_dir/train/<class>/*`` and ``data_dir/val/<class>/*`` ({n} classes). {prep}
    Class names come from the folder names, cleaned (``clean_names``), unless ``class_names``
    or ``class_names_file`` is given. ``shots`` = 1 / 5 / 10 are the paper's few-shot settings
    (Table 4); ``None`` is the full setting. Arguments as :class:`ImageFolderDataModule`.
"""


class CUB200DataModule(ImageFolderDataModule):
    __doc__ = _FINE_GRAINED_DOC.format(
        name="CUB-200-2011",
        n=200,
        prep="Build it from ``CUB_200_2011/images`` with ``train_test_split.txt`` (test images "
        "as ``val``); folder names like ``001.Black_footed_Albatross`` become "
        '``"black footed albatross"``.',
    )
    dataset_name = "CUB-200"
    expected_num_classes = 200
    how_to_get = (
        "Download CUB_200_2011 from https://www.vision.caltech.edu/datasets/cub_200_2011/ and "
        "split images/ into train/ and val/ with train_test_split.txt."
    )


class StanfordCarsDataModule(ImageFolderDataModule):
    __doc__ = _FINE_GRAINED_DOC.format(
        name="Stanford Cars-196",
        n=196,
        prep="Name the class folders after the make / model / year (e.g. ``AM General Hummer "
        "SUV 2000``) from ``cars_meta.mat``.",
    )
    dataset_name = "Stanford Cars"
    expected_num_classes = 196
    how_to_get = (
        "Get Stanford Cars (e.g. via torchvision.datasets.StanfordCars or Kaggle) and sort the "
        "images into train/<class name>/ and val/<class name>/ using the devkit annotations."
    )


class FGVCAircraftDataModule(ImageFolderDataModule):
    __doc__ = _FINE_GRAINED_DOC.format(
        name="FGVC-Aircraft",
        n=100,
        prep="Use the 100 variants (``images_variant_trainval.txt`` / ``_test.txt``) as folder "
        "names (e.g. ``707-320``, kept intact by the clean-up). The paper initialises the "
        'prompt context with "a type of aircraft" for this dataset (§4.4).',
    )
    dataset_name = "FGVC-Aircraft"
    expected_num_classes = 100
    how_to_get = (
        "Download fgvc-aircraft-2013b from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ "
        "and sort data/images into train/<variant>/ and val/<variant>/."
    )


class Flowers102DataModule(ImageFolderDataModule):
    __doc__ = _FINE_GRAINED_DOC.format(
        name="Oxford Flowers-102",
        n=102,
        prep="The official labels are numbers: name the folders after the flowers or pass "
        "``class_names`` / ``class_names_file`` (a warning reminds you when all names are "
        "numeric).",
    )
    dataset_name = "Flowers-102"
    expected_num_classes = 102
    how_to_get = (
        "Download 102flowers.tgz, imagelabels.mat and setid.mat from "
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ and sort the images into "
        "train/<class>/ and val/<class>/."
    )
