"""CIFAR-10/100 and SVHN data modules against fake torchvision datasets (never downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torchvision import transforms as T

from lico_lightning.data import (
    CIFAR10_CLASSES,
    DIGIT_CLASSES,
    CIFAR10DataModule,
    CIFAR100DataModule,
    SVHNDataModule,
)


@pytest.fixture(autouse=True)
def _fakes(fake_torchvision_datasets):
    return fake_torchvision_datasets


@pytest.fixture
def cifar_root(fake_cifar_root):
    return fake_cifar_root


def test_cifar10_limited_labels(cifar_root, fake_torchvision_datasets) -> None:
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
    assert all(c["download"] is False for c in fake_torchvision_datasets)


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
    fake_cifar10 = torchvision.datasets.CIFAR10  # the conftest fake, listing CIFAR-10 names
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", fake_cifar10)
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


def test_svhn_names_and_extra_split(cifar_root, fake_torchvision_datasets) -> None:
    dm = SVHNDataModule(cifar_root, num_labels=40, train_splits=["train", "extra"])
    assert dm.class_names == DIGIT_CLASSES
    dm.setup("fit")
    assert len(dm.train_dataset) == 40 and len(dm.val_dataset) == 30
    assert {c["split"] for c in fake_torchvision_datasets} == {"train", "extra", "test"}
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


def test_download_happens_only_in_prepare_data(tmp_path, fake_torchvision_datasets) -> None:
    dm = CIFAR10DataModule(str(tmp_path), download=True)  # no check at construction
    assert fake_torchvision_datasets == []
    dm.prepare_data()
    assert [c["download"] for c in fake_torchvision_datasets] == [True, True]
    assert [c["train"] for c in fake_torchvision_datasets] == [True, False]


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


#: the documented options and defaults of every limited-label data module
LIMITED_LABEL_DEFAULTS = {
    "data_dir": "data",
    "num_labels": None,
    "augment": True,
    "download": False,
    "batch_size": 64,
    "num_workers": 4,
    "seed": 0,
    "return_index": False,
    "class_names": None,
    "train_samples_per_epoch": None,
    "pin_memory": False,
}


def test_one_constructor_with_the_documented_options_and_defaults() -> None:
    import inspect

    for cls in (CIFAR10DataModule, CIFAR100DataModule):
        params = inspect.signature(cls).parameters
        assert {k: p.default for k, p in params.items()} == LIMITED_LABEL_DEFAULTS, cls
    # SVHN adds train_splits (after num_labels) and takes the others as keywords
    svhn = SVHNDataModule(download=True, batch_size=7)
    expected = {**LIMITED_LABEL_DEFAULTS, "download": True, "batch_size": 7, "train_splits": None}
    del expected["class_names"]  # the model's hparam, not the data module's
    assert dict(svhn.hparams) == expected
    assert svhn.batch_size == 7 and svhn.train_splits == ["train"]
    with pytest.raises(TypeError, match="unexpected keyword"):
        SVHNDataModule(download=True, batch_sizes=7)
