"""Small dataset wrappers: sample indices and in-memory image tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lico_lightning._validation import check_tensor

__all__ = ["IndexedDataset", "TensorImageDataset"]


class IndexedDataset(Dataset):
    """Wrap a dataset so that item ``i`` is ``(*dataset[i], i)``.

    ``i`` is the position in the wrapped dataset (after any subsetting), the key per-sample
    estimators index their state with.

    Example:
        >>> ds = IndexedDataset([("a", 0), ("b", 1)])
        >>> ds[1], len(ds)
        (('b', 1, 1), 2)
    """

    def __init__(self, dataset: Sequence[Any] | Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        # torch's Dataset declares no __len__ (map-style datasets here all have one)
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return (*self.dataset[index], index)


class TensorImageDataset(Dataset):
    """In-memory images ``(B, C, H, W)`` in ``[0, 1]`` with labels; normalises per item.

    Args:
        images: Float images ``(B, C, H, W)`` in ``[0, 1]``.
        targets: ``long`` labels ``(B,)``.
        mean: Per-channel mean used for normalisation.
        std: Per-channel std used for normalisation.
        transform: Optional augmentation applied to the ``[0, 1]`` image ``(C, H, W)`` before
            normalisation (random ones draw from the global RNG in the loading process).
        return_index: Return ``(image, target, index)`` instead of ``(image, target)``.

    Example:
        >>> ds = TensorImageDataset(torch.ones(4, 1, 2, 2), torch.arange(4), (0.5,), (0.5,))
        >>> img, y = ds[2]
        >>> img.flatten().tolist(), int(y)
        ([1.0, 1.0, 1.0, 1.0], 2)
    """

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        transform: Callable[[Tensor], Tensor] | None = None,
        return_index: bool = False,
    ) -> None:
        check_tensor("images", images, ndim=4, floating=True)
        check_tensor("targets", targets, ndim=1)
        if targets.shape[0] != images.shape[0]:
            raise ValueError(
                f"Expected one target per image ({images.shape[0]}), but got {targets.shape[0]}."
            )
        c = images.shape[1]
        if len(mean) != c or len(std) != c:
            raise ValueError(
                f"Expected `mean` and `std` with {c} values, but got {len(mean)} and {len(std)}."
            )
        self.images = images
        self.targets = targets.long()
        self._mean = torch.tensor(mean, dtype=images.dtype).view(c, 1, 1)
        self._std = torch.tensor(std, dtype=images.dtype).view(c, 1, 1)
        self.transform = transform
        self.return_index = return_index

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        img = self.images[index]
        if self.transform is not None:
            img = self.transform(img)
        img = (img - self._mean) / self._std
        if self.return_index:
            return img, self.targets[index], index
        return img, self.targets[index]
