"""CIFAR-10 / CIFAR-100 / SVHN with the limited-label splits of the LICO paper (Table 3)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import torchvision
from torch.utils.data import ConcatDataset, Dataset, Subset
from torchvision import transforms as T

from lico_lightning._validation import check_choice
from lico_lightning.data._base import ImageDataModule
from lico_lightning.data._class_names import CIFAR10_CLASSES, CIFAR100_CLASSES, DIGIT_CLASSES
from lico_lightning.data._splits import limited_label_indices

__all__ = ["CIFAR10DataModule", "CIFAR100DataModule", "SVHNDataModule"]

_STAGES = ("fit", "validate", "test", "predict")


def _check_stage(stage: str | None) -> None:
    if stage is not None:
        check_choice("stage", stage, _STAGES)


class _LimitedLabelDataModule(ImageDataModule):
    """Shared logic: torchvision dataset, optional class-balanced labelled subset, test = val.

    Validation and test both use the official test split (the protocol of FixMatch /
    FlexMatch, which the paper follows). The constructor is the public one of every subclass.

    Args:
        data_dir: torchvision root of the dataset.
        num_labels: Labelled training images (a multiple of the class count), or ``None`` for
            all.
        augment: Crop (+ flip where the dataset allows it) augmentation of training images.
        download: Let torchvision download the data in ``prepare_data``.
        batch_size: Batch size of every loader.
        num_workers: DataLoader workers.
        seed: Seed of the labelled subset and of the training order.
        return_index: Yield ``(image, target, index)``.
        class_names: Names overriding the built-in ones (one per class).
        train_samples_per_epoch: Training samples per epoch (default: the training set size).
        pin_memory: DataLoader ``pin_memory``.
    """

    dataset_name: ClassVar[str]
    torchvision_name: ClassVar[str]
    default_classes: ClassVar[list[str]]
    dataset_mean: ClassVar[tuple[float, float, float]]
    dataset_std: ClassVar[tuple[float, float, float]]
    horizontal_flip: ClassVar[bool] = True
    source_url: ClassVar[str]

    def __init__(
        self,
        data_dir: str = "data",
        num_labels: int | None = None,
        augment: bool = True,
        download: bool = False,
        batch_size: int = 64,
        num_workers: int = 4,
        seed: int = 0,
        return_index: bool = False,
        class_names: list[str] | None = None,
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
        n_cls = len(self.default_classes)
        if num_labels is not None and (
            isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1
        ):
            raise ValueError(
                f"Expected `num_labels` to be a positive int or None, but got {num_labels!r}."
            )
        if num_labels is not None and num_labels % n_cls != 0:
            raise ValueError(
                f"Expected `num_labels` to be a multiple of {n_cls} (class-balanced split of "
                f"{self.dataset_name}), but got {num_labels}."
            )
        self.class_names = self._resolve_class_names(self.default_classes, class_names, n_cls)
        self.data_dir = str(data_dir)
        self.num_labels = num_labels
        self.augment = augment
        self.download = download
        self.image_size = 32
        self.mean = self.dataset_mean
        self.std = self.dataset_std
        self.labeled_indices: list[int] | None = None
        if not download:
            self._check_files()

    # -- per-dataset hooks ------------------------------------------------------------
    def _required_paths(self, train: bool) -> list[Path]:
        raise NotImplementedError

    def _make(self, train: bool, transform: Any, download: bool) -> Dataset:
        raise NotImplementedError

    @staticmethod
    def _labels(dataset: Any) -> list[int]:
        return list(dataset.targets)

    # -- shared logic -----------------------------------------------------------------
    def _split_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "num_labels": self.num_labels}

    def _check_files(self) -> None:
        paths = dict.fromkeys(self._required_paths(True) + self._required_paths(False))
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"Expected {self.dataset_name} under data_dir={self.data_dir!r}, but "
                f"{', '.join(str(p) for p in missing)} is missing. Pass download=True to let "
                f"torchvision fetch it (from {self.source_url}), or place the extracted files "
                "there."
            )

    def _transforms(self, train: bool) -> T.Compose:
        ops: list[Any] = []
        if train and self.augment:
            ops.append(T.RandomCrop(32, padding=4, padding_mode="reflect"))
            if self.horizontal_flip:
                ops.append(T.RandomHorizontalFlip())
        ops += [T.ToTensor(), T.Normalize(self.mean, self.std)]
        return T.Compose(ops)

    def prepare_data(self) -> None:
        """Download both splits when ``download=True`` (Lightning runs this on rank 0)."""
        if self.download:
            self._make(train=True, transform=None, download=True)
            self._make(train=False, transform=None, download=True)

    def setup(self, stage: str | None = None) -> None:
        """Load the splits; the training split is cut to ``num_labels`` when given."""
        _check_stage(stage)
        self._check_files()
        if stage in (None, "fit"):
            full = self._make(train=True, transform=self._transforms(train=True), download=False)
            found = getattr(full, "classes", None)
            if found is not None and list(found) != list(self.default_classes):
                warnings.warn(
                    f"{self.dataset_name} on disk lists classes {list(found)[:3]}..., which differ "
                    f"from the built-in names {self.default_classes[:3]}...; pass `class_names`.",
                    UserWarning,
                    stacklevel=2,
                )
            train: Dataset = full
            if self.num_labels is not None:
                idx = limited_label_indices(
                    self._labels(full),
                    self.num_labels,
                    seed=self.seed,
                    num_classes=self.num_classes,
                )
                self.labeled_indices = idx.tolist()
                train = Subset(full, self.labeled_indices)
            self.train_dataset = self._with_index(train)
        test = self._with_index(
            self._make(train=False, transform=self._transforms(train=False), download=False)
        )
        self.val_dataset = test
        self.test_dataset = test


class CIFAR10DataModule(_LimitedLabelDataModule):
    """CIFAR-10 (torchvision) with optional class-balanced limited labels.

    ``num_labels`` = 40 / 250 / 4000 are the paper's limited-label settings (4 / 25 / 400 per
    class), ``None`` trains on all 50 000 images. Training augmentation: random 32×32 crop of
    the 4-pixel reflect-padded image and horizontal flip. Validation = test = the official test
    split. Class names are torchvision's (``"airplane"`` … ``"truck"``).

    Args:
        data_dir: torchvision root (holding ``cifar-10-batches-py``).
        num_labels: Labelled training images (multiple of 10), or ``None`` for all.
        augment: Crop + flip augmentation of training images.
        download: Let torchvision download the data in ``prepare_data``.
        batch_size: Batch size of every loader.
        num_workers: DataLoader workers.
        seed: Seed of the labelled subset and of the training order.
        return_index: Yield ``(image, target, index)``.
        class_names: Ten names overriding torchvision's.
        train_samples_per_epoch: Training samples per epoch (default: the training set size);
            more than the labelled set gives FixMatch-style iteration-based epochs.
        pin_memory: DataLoader ``pin_memory``.

    Example:
        >>> dm = CIFAR10DataModule("data", num_labels=40, download=True)  # fetched in prepare_data
        >>> dm.num_classes, dm.class_names[:2], dm.image_size, dm.mean
        (10, ['airplane', 'automobile'], 32, (0.4914, 0.4822, 0.4465))
    """

    dataset_name = "CIFAR-10"
    torchvision_name = "CIFAR10"
    default_classes = CIFAR10_CLASSES
    dataset_mean = (0.4914, 0.4822, 0.4465)
    dataset_std = (0.2471, 0.2435, 0.2616)
    source_url = "https://www.cs.toronto.edu/~kriz/cifar.html"
    _folder = "cifar-10-batches-py"

    def _required_paths(self, train: bool) -> list[Path]:
        return [Path(self.data_dir) / self._folder]

    def _make(self, train: bool, transform: Any, download: bool) -> Dataset:
        cls = getattr(torchvision.datasets, self.torchvision_name)
        return cls(root=self.data_dir, train=train, transform=transform, download=download)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (torchvision, fine labels) with optional class-balanced limited labels.

    ``num_labels`` = 400 / 2500 / 10000 are the paper's settings (4 / 25 / 100 per class).
    Same augmentation and protocol as :class:`CIFAR10DataModule`; class names are torchvision's
    (underscores as in ``"aquarium_fish"``; override ``class_names`` for prompts). The other
    arguments are :class:`CIFAR10DataModule`'s.

    Args:
        data_dir: torchvision root (holding ``cifar-100-python``).
        num_labels: Labelled training images (multiple of 100), or ``None`` for all.
        class_names: 100 names overriding torchvision's.
    """

    dataset_name = "CIFAR-100"
    torchvision_name = "CIFAR100"
    default_classes = CIFAR100_CLASSES
    dataset_mean = (0.5071, 0.4865, 0.4409)
    dataset_std = (0.2673, 0.2564, 0.2762)
    _folder = "cifar-100-python"


class SVHNDataModule(_LimitedLabelDataModule):
    """SVHN (torchvision) with optional class-balanced limited labels.

    ``num_labels`` = 40 / 1000 are the paper's settings (4 / 100 per class). Training
    augmentation: random crop of the 4-pixel reflect-padded image, **no** horizontal flip
    (digits are not mirror-symmetric). Validation = test = the official test split.

    SVHN has no class-name list: torchvision maps the digit "0" (label 10 in the ``.mat``
    files) to class 0, so class ``k`` is the digit ``k`` and the default names are the
    words ``"zero"`` … ``"nine"`` (as for :class:`~lico_lightning.data.DigitsDataModule`;
    words are single tokens for both CLIP's and BERT's tokenizers). Pass
    ``class_names=["0", ..., "9"]`` to use numerals.

    Args:
        data_dir: torchvision root (holding ``train_32x32.mat``, ``test_32x32.mat``).
        num_labels: Labelled training images (multiple of 10), or ``None`` for all.
        train_splits: SVHN splits forming the training set: ``["train"]`` (default) or
            ``["train", "extra"]``; limited labels are drawn from their union.
        augment: Crop augmentation of training images.
        download: Let torchvision download the data in ``prepare_data``.
        batch_size: Batch size of every loader.
        num_workers: DataLoader workers.
        seed: Seed of the labelled subset and of the training order.
        return_index: Yield ``(image, target, index)``.
        class_names: Ten names overriding ``"zero"`` … ``"nine"``.
        train_samples_per_epoch: Training samples per epoch (default: the training set size).
        pin_memory: DataLoader ``pin_memory``.

    Example:
        >>> dm = SVHNDataModule("data", num_labels=1000, download=True)
        >>> dm.class_names[:3], dm.std
        (['zero', 'one', 'two'], (0.198, 0.201, 0.197))
    """

    dataset_name = "SVHN"
    torchvision_name = "SVHN"
    default_classes = DIGIT_CLASSES
    dataset_mean = (0.4377, 0.4438, 0.4728)
    dataset_std = (0.1980, 0.2010, 0.1970)
    horizontal_flip = False
    source_url = "http://ufldl.stanford.edu/housenumbers/"

    def __init__(
        self,
        data_dir: str = "data",
        num_labels: int | None = None,
        train_splits: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """``train_splits`` and the options of every limited-label data module (``augment``,
        ``download``, ``batch_size``, ...: see the class docstring)."""
        splits = ["train"] if train_splits is None else list(train_splits)
        if not splits or len(set(splits)) != len(splits):
            raise ValueError(
                f"Expected `train_splits` to be distinct SVHN split names, but got {splits!r}."
            )
        for s in splits:
            check_choice("train_splits", s, ["train", "extra"])
        self.train_splits = splits
        super().__init__(data_dir=data_dir, num_labels=num_labels, **kwargs)

    def _split_config(self) -> dict[str, Any]:
        return {**super()._split_config(), "train_splits": self.train_splits}

    def _required_paths(self, train: bool) -> list[Path]:
        splits = self.train_splits if train else ["test"]
        return [Path(self.data_dir) / f"{s}_32x32.mat" for s in splits]

    def _make(self, train: bool, transform: Any, download: bool) -> Dataset:
        cls = torchvision.datasets.SVHN
        splits = self.train_splits if train else ["test"]
        parts = [
            cls(root=self.data_dir, split=s, transform=transform, download=download) for s in splits
        ]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    @staticmethod
    def _labels(dataset: Any) -> list[int]:
        if isinstance(dataset, ConcatDataset):
            return [y for part in dataset.datasets for y in SVHNDataModule._labels(part)]
        return [int(y) for y in dataset.labels]
