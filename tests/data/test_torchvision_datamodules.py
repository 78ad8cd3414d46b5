"""CIFAR-10/100 and SVHN data modules against fake torchvision datasets (never downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms as T

from lico_lightning.data import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    DIGIT_CLASSES,
    CIFAR10DataModule,
    CIFAR100DataModule,
    SVHNDataModule,
)

CALLS: list[dict] = []


class _FakeBase:
    """Shape of a torchvision dataset: PIL 32×32 images, transform applied in __getitem__."""

    def __init__(self, n_classes: int, per_class: int, transform, download: bool, **where):
        CALLS.append({"download": download, **where})
        rng = np.random.default_rng(len(CALLS))
        self.data = rng.integers(0, 256, size=(n_classes * per_class, 32, 32, 3), dtype=np.uint8)
        self._labels = [i % n_classes for i in range(n_classes * per_class)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.data[i])
        return (self.transform(img) if self.transform else img), self._labels[i]


class FakeCIFAR10(_FakeBase):
    n_classes = 10

    def __init__(self, root, train=True, transform=None, download=False):
        super().__init__(self.n_classes, 30 if train else 4, transform, download, train=train)
        self.targets = self._labels
        self.classes = CIFAR10_CLASSES


class FakeCIFAR100(FakeCIFAR10):
    n_classes = 100

    def __init__(self, root, train=True, transform=None, download=False):
        super().__init__(root, train, transform, download)
        self.classes = CIFAR100_CLASSES


class FakeSVHN(_FakeBase):
    def __init__(self, root, split="train", transform=None, download=False):
        per = {"train": 12, "extra": 5, "test": 3}[split]
        super().__init__(10, per, transform, download, split=split)
        self.labels = np.asarray(self._labels)


@pytest.fixture(autouse=True)
def fake_torchvision(monkeypatch):
    CALLS.clear()
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR100)
    monkeypatch.setattr(torchvision.datasets, "SVHN", FakeSVHN)


@pytest.fixture
def cifar_root(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-100-python").mkdir()
    for split in ("train", "test", "extra"):
        (tmp_path / f"{split}_32x32.mat").touch()
    return str(tmp_path)


def test_cifar10_limited_labels(cifar_root) -> None:
    dm = CIFAR10DataModule(cifar_root, num_labels=40, batch_size=8, seed=3, num_workers=0)
    assert dm.class_names == CIFAR10_CLASSES and dm.num_classes == 10 and dm.image_size == 32
    dm.setup("fit")
    assert len(dm.train_dataset) == 40 and len(dm.val_dataset) == 40
    labels = [dm.train_dataset[i][1] for i in range(40)]
    assert np.bincount(labels).tolist() == [4] * 10
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.long
    assert dm.val_dataset is dm.test_dataset
    again = CIFAR10DataModule(cifar_root, num_labels=40, seed=3)
    again.setup("fit")
    assert again.labeled_indices == dm.labeled_indices
    assert all(c["download"] is False for c in CALLS)


def test_full_training_set_and_return_index(cifar_root) -> None:
    dm = CIFAR10DataModule(cifar_root, return_index=True, num_workers=0, batch_size=4)
    dm.setup("fit")
    assert len(dm.train_dataset) == 300
    _, y, index = dm.train_dataset[17]
    assert index == 17 and y == 17 % 10
    *_, ib = next(iter(dm.val_dataloader()))
    assert ib.tolist() == [0, 1, 2, 3]


def test_cifar100_budget_is_per_100_classes(cifar_root) -> None:
    dm = CIFAR100DataModule(cifar_root, num_labels=400)
    assert dm.num_classes == 100 and dm.class_names[:2] == ["apple", "aquarium_fish"]
    dm.setup("fit")
    assert len(dm.train_dataset) == 400
    with pytest.raises(ValueError, match="multiple of 100"):
        CIFAR100DataModule(cifar_root, num_labels=250)


def test_class_list_on_disk_is_checked(cifar_root, monkeypatch) -> None:
    dm = CIFAR100DataModule(cifar_root)
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR10)  # lists CIFAR-10 names
    with pytest.warns(UserWarning, match="differ from the built-in names"):
        dm.setup("fit")


def test_more_labels_than_available_fails_at_setup(cifar_root) -> None:
    dm = CIFAR10DataModule(cifar_root, num_labels=400)  # the fake has 30 per class
    with pytest.raises(ValueError, match="at least 40 samples in every class"):
        dm.setup("fit")


def test_augmentation_pipelines() -> None:
    def ops(dm, train):
        return [type(t) for t in dm._transforms(train).transforms]

    cifar = CIFAR10DataModule(download=True)
    svhn = SVHNDataModule(download=True)
    assert ops(cifar, True) == [T.RandomCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert ops(svhn, True) == [T.RandomCrop, T.ToTensor, T.Normalize]  # no flip for digits
    assert ops(cifar, False) == [T.ToTensor, T.Normalize]
    crop = cifar._transforms(True).transforms[0]
    assert crop.padding == 4 and crop.padding_mode == "reflect"


def test_svhn_names_and_extra_split(cifar_root) -> None:
    dm = SVHNDataModule(cifar_root, num_labels=40, train_splits=["train", "extra"])
    assert dm.class_names == DIGIT_CLASSES
    dm.setup("fit")
    assert len(dm.train_dataset) == 40 and len(dm.val_dataset) == 30
    assert {c["split"] for c in CALLS} == {"train", "extra", "test"}
    full = SVHNDataModule(cifar_root, train_splits=["train", "extra"])
    full.setup("fit")
    assert len(full.train_dataset) == 170
    with pytest.raises(ValueError, match=r"one of \['extra', 'train'\]"):
        SVHNDataModule(cifar_root, train_splits=["train", "valid"])
    with pytest.raises(ValueError, match="distinct"):
        SVHNDataModule(cifar_root, train_splits=["train", "train"])


def test_missing_data_says_how_to_get_it(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"download=True.*cs\.toronto\.edu"):
        CIFAR10DataModule(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"test_32x32\.mat"):
        SVHNDataModule(str(tmp_path))


def test_download_happens_only_in_prepare_data(tmp_path) -> None:
    dm = CIFAR10DataModule(str(tmp_path), download=True)  # no check at construction
    assert CALLS == []
    dm.prepare_data()
    assert [c["download"] for c in CALLS] == [True, True]
    assert [c["train"] for c in CALLS] == [True, False]


def test_bad_arguments(cifar_root) -> None:
    with pytest.raises(ValueError, match="multiple of 10"):
        CIFAR10DataModule(cifar_root, num_labels=45)
    with pytest.raises(ValueError, match="positive int or None"):
        CIFAR10DataModule(cifar_root, num_labels=0)
    with pytest.raises(ValueError, match="Expected 10 class names"):
        CIFAR10DataModule(cifar_root, class_names=["a", "b"])
    with pytest.raises(ValueError, match="stage"):
        CIFAR10DataModule(cifar_root).setup("training")


def test_state_dict_records_the_label_budget(cifar_root) -> None:
    saved = CIFAR10DataModule(cifar_root, num_labels=250, seed=1).state_dict()
    assert saved == {"split": {"seed": 1, "num_labels": 250}}
    with pytest.warns(UserWarning, match="num_labels"):
        CIFAR10DataModule(cifar_root, num_labels=4000, seed=1).load_state_dict(saved)
