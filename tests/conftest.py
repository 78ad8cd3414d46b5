"""Test-wide settings: offline, deterministic, small thread count (CI has 2 cores)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

# Respect an explicit OMP_NUM_THREADS (e.g. several test runs sharing the machine).
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------- fake torchvision datasets
# Shape of torchvision's CIFAR-10/100 and SVHN (PIL 32×32 images, transform in __getitem__)
# so that data modules and recipes are tested without the data and never download.
_FAKE_CALLS: list[dict] = []


class _FakeBase:
    def __init__(self, n_classes: int, per_class: int, transform, download: bool, **where):
        import numpy as np

        _FAKE_CALLS.append({"download": download, **where})
        rng = np.random.default_rng(len(_FAKE_CALLS))
        self.data = rng.integers(0, 256, size=(n_classes * per_class, 32, 32, 3), dtype=np.uint8)
        self._labels = [i % n_classes for i in range(n_classes * per_class)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.data[i])
        return (self.transform(img) if self.transform else img), self._labels[i]


class FakeCIFAR10(_FakeBase):
    n_classes = 10

    def __init__(self, root, train=True, transform=None, download=False):
        from lico_lightning.data import CIFAR10_CLASSES

        super().__init__(self.n_classes, 30 if train else 4, transform, download, train=train)
        self.targets = self._labels
        self.classes = CIFAR10_CLASSES


class FakeCIFAR100(FakeCIFAR10):
    n_classes = 100

    def __init__(self, root, train=True, transform=None, download=False):
        from lico_lightning.data import CIFAR100_CLASSES

        super().__init__(root, train, transform, download)
        self.classes = CIFAR100_CLASSES


class FakeSVHN(_FakeBase):
    def __init__(self, root, split="train", transform=None, download=False):
        import numpy as np

        per = {"train": 12, "extra": 5, "test": 3}[split]
        super().__init__(10, per, transform, download, split=split)
        self.labels = np.asarray(self._labels)


@pytest.fixture
def fake_torchvision_datasets(monkeypatch) -> list[dict]:
    """Patch torchvision's CIFAR10/CIFAR100/SVHN with fakes; returns the constructor-call log."""
    import torchvision

    _FAKE_CALLS.clear()
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR100)
    monkeypatch.setattr(torchvision.datasets, "SVHN", FakeSVHN)
    return _FAKE_CALLS


@pytest.fixture
def fake_cifar_root(tmp_path) -> str:
    """A data_dir where the CIFAR/SVHN data modules find the files they check for."""
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-100-python").mkdir()
    for split in ("train", "test", "extra"):
        (tmp_path / f"{split}_32x32.mat").touch()
    return str(tmp_path)
