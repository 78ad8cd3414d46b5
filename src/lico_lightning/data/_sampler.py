"""A shuffling sampler whose order is a pure function of ``(seed, epoch)``: exact resume."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from lico_lightning._validation import check_int

__all__ = ["ResumableRandomSampler"]


def _epoch_seed(seed: int, epoch: int) -> int:
    """Mix ``(seed, epoch)`` into one 64-bit seed (no collisions like ``seed + epoch``)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, epoch]).generate_state(
        1, dtype=np.uint64
    )
    return int(state[0])


class ResumableRandomSampler(Sampler[int]):
    r"""Random permutation per epoch, drawn from a private generator seeded by ``(seed, epoch)``.

    .. math::

        \text{order}_e = \operatorname{randperm}\big(N;\ \operatorname{SeedSequence}(s, e)\big)


    Lightning calls ``set_epoch(current_epoch)`` on a dataloader's sampler at the start of every
    training epoch (``lightning_fabric.utilities.data._set_sampler_epoch``, also forwarded by the
    ``DistributedSamplerWrapper`` it injects under DDP). A run resumed from an epoch-end
    checkpoint therefore sees exactly the order an uninterrupted run sees. The global torch RNG
    is never consumed, so shuffling does not shift the random streams of augmentation, dropout
    or model initialisation.

    A checkpoint saved in the middle of an epoch replays that epoch from its first batch
    (Lightning's default loaders are not stateful); use epoch-end checkpoints for exact resume.

    Args:
        num_items: Size of the dataset.
        seed: Base seed.
        num_samples: Indices per epoch; default ``num_items``. A larger value concatenates
            independent permutations (full passes) and truncates the last one: an
            iteration-based epoch like FixMatch's labelled loader for tiny labelled sets.

    Example:
        >>> s = ResumableRandomSampler(5, seed=0)
        >>> s.set_epoch(3)
        >>> order = list(s)
        >>> t = ResumableRandomSampler(5, seed=0)
        >>> t.set_epoch(3)
        >>> order == list(t), sorted(order)
        (True, [0, 1, 2, 3, 4])
    """

    def __init__(self, num_items: int, seed: int = 0, num_samples: int | None = None) -> None:
        check_int("num_items", num_items, 1)
        check_int("seed", seed, 0)
        if num_samples is not None:
            check_int("num_samples", num_samples, 1)
        self.num_items = num_items
        self.seed = seed
        self.num_samples = num_items if num_samples is None else num_samples
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (called by Lightning before every epoch)."""
        check_int("epoch", epoch, 0)
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        """The epoch's indices as a ``long`` tensor ``(num_samples,)``."""
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        passes = -(-self.num_samples // self.num_items)
        perms = [torch.randperm(self.num_items, generator=g) for _ in range(passes)]
        return torch.cat(perms)[: self.num_samples]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict[str, Any]:
        """``{"seed", "epoch", "num_items", "num_samples"}``."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "num_items": self.num_items,
            "num_samples": self.num_samples,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore seed and epoch; the dataset size must match."""
        if int(state_dict["num_items"]) != self.num_items:
            raise ValueError(
                f"Expected a sampler state for {self.num_items} items, but got one for "
                f"{state_dict['num_items']}."
            )
        self.seed = int(state_dict["seed"])
        self.epoch = int(state_dict["epoch"])
        self.num_samples = int(state_dict["num_samples"])
