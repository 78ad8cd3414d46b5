"""The embedded offline default: scikit-learn's handwritten digits, upscaled, in memory."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F
from torchvision.transforms import v2

from lico_lightning._validation import check_int
from lico_lightning.data._base import ImageDataModule
from lico_lightning.data._class_names import DIGIT_CLASSES
from lico_lightning.data._datasets import TensorImageDataset
from lico_lightning.data._splits import stratified_split_indices

__all__ = ["DigitsDataModule"]


def _load_digits(image_size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as ``(1797, channels, image_size, image_size)`` in ``[0, 1]``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size != images.shape[-1]:
        images = F.interpolate(
            images,
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=image_size < images.shape[-1],
        ).clamp_(0.0, 1.0)
    images = images.expand(-1, channels, -1, -1).contiguous()
    return images, torch.as_tensor(bunch.target, dtype=torch.long)


class DigitsDataModule(ImageDataModule):
    """scikit-learn's handwritten digits (1797 grey 8×8 images, 10 classes), ready offline.

    The images ship with scikit-learn: no download, no files. They are scaled to ``[0, 1]``,
    upscaled bilinearly to ``image_size`` (32 by default, the CIFAR / WRN input size, so WRN-28-k
    gives an 8×8 feature map as in the paper) and repeated to ``channels`` channels. A seeded
    stratified split gives train / val / test (default 60 / 20 / 20 %: 1079 / 359 / 359 images
    with ``seed=0``). ``mean`` / ``std`` are computed on the training split. Everything lives in
    memory; ``num_workers=0`` is the fast choice.

    Class names are ``"zero"`` … ``"nine"`` unless ``class_names`` overrides them.

    Args:
        image_size: Side of the square images.
        channels: Image channels (the grey value repeated); 3 for ImageNet-style backbones.
        val_fraction: Fraction of each class in the validation split.
        test_fraction: Fraction of each class in the test split; 0 makes ``test`` the
            validation split.
        augment: Random translation by up to ``image_size // 8`` pixels (background-filled) for
            training images. Draws from the global torch RNG of the loading process.
        batch_size: Batch size of every loader.
        num_workers: DataLoader workers.
        seed: Seed of the split and of the training-order sampler.
        return_index: Yield ``(image, target, index)``.
        class_names: Ten names to use instead of ``"zero"`` … ``"nine"``.
        train_samples_per_epoch: Training samples per epoch (default: the training split size).

    Example:
        >>> dm = DigitsDataModule(image_size=16, batch_size=4)
        >>> dm.num_classes, dm.class_names[:3], dm.image_size
        (10, ['zero', 'one', 'two'], 16)
        >>> dm.setup("fit")
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> x.shape, y.dtype
        (torch.Size([4, 3, 16, 16]), torch.int64)
    """

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        augment: bool = False,
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
        check_int("image_size", image_size, 1)
        check_int("channels", channels, 1)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"Expected `val_fraction` in (0, 1), but got {val_fraction!r}.")
        if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
            raise ValueError(
                "Expected `test_fraction` in [0, 1) with val_fraction + test_fraction < 1, "
                f"but got {test_fraction!r} (val_fraction={val_fraction!r})."
            )
        self.class_names = self._resolve_class_names(DIGIT_CLASSES, class_names, 10)
        self.image_size = image_size
        self.channels = channels
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.augment = augment

        images, targets = _load_digits(image_size, channels)
        fractions = [self.val_fraction] + ([self.test_fraction] if test_fraction > 0 else [])
        parts = stratified_split_indices(targets, fractions, seed=seed)
        self._images, self._targets = images, targets
        self.train_indices = parts[0]
        self.val_indices = parts[1]
        self.test_indices = parts[2] if len(parts) > 2 else parts[1]
        train = images[self.train_indices]
        self.mean = tuple(float(m) for m in train.mean(dim=(0, 2, 3)))
        self.std = tuple(float(s) for s in train.std(dim=(0, 2, 3)))

    def _split_config(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
        }

    def _dataset(self, indices: torch.Tensor, train: bool) -> TensorImageDataset:
        transform = None
        if train and self.augment:
            pad = max(1, self.image_size // 8)
            transform = v2.RandomCrop(self.image_size, padding=pad, fill=0)
        return TensorImageDataset(
            self._images[indices],
            self._targets[indices],
            self.mean,
            self.std,
            transform=transform,
            return_index=self.return_index,
        )

    def setup(self, stage: str | None = None) -> None:
        """Build the in-memory train / val / test datasets (cheap; every stage gets all)."""
        self.train_dataset = self._dataset(self.train_indices, train=True)
        self.val_dataset = self._dataset(self.val_indices, train=False)
        self.test_dataset = self._dataset(self.test_indices, train=False)

    def _with_index(self, dataset: Any) -> Any:  # datasets return the index themselves
        return dataset
