"""``ProbeSet``: the fixed items a monitor explains at every run, as one dataclass of ``N`` rows.

A monitor's specialisation declares its fields (images, labels, boxes, captions, ...) by
deriving from :class:`ProbeSet`; selecting rows, sharding across ranks and moving to a device
then work for every monitor alike. Which dataset items become probes is the one seeded draw of
:func:`lico_lightning.data.draw_probe_indices`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor
from typing_extensions import Self

__all__ = ["ProbeSet"]


@dataclasses.dataclass
class ProbeSet:
    """Base of a monitor's probe set: every field holds ``N`` rows (a tensor whose first dim is
    ``N``, a list of ``N`` items, a dict of such tensors, or ``None`` for an absent optional
    field).

    A specialisation declares its fields (e.g. images, labels, boxes) as a dataclass deriving
    from this; selection, sharding across ranks and moving to a device then work for free.

    Example:
        >>> @dataclasses.dataclass
        ... class Pairs(ProbeSet):
        ...     images: Tensor
        ...     names: list[str]
        >>> p = Pairs(torch.zeros(5, 3), list("abcde"))
        >>> len(p), p.shard(1, 2).names, p.select([0, 4]).names
        (5, ['b', 'd'], ['a', 'e'])
    """

    def __len__(self) -> int:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, dict):
                value = next(iter(value.values()), None)
            if value is not None:
                return len(value)
        return 0

    def select(self, index: slice | list[int]) -> Self:
        """The rows ``index`` (a slice, or a list of row numbers) of every field."""

        def rows(value: Any) -> Any:
            if isinstance(value, list) and isinstance(index, list):
                return [value[i] for i in index]
            return value[index]

        values: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, dict):
                values[field.name] = {k: rows(v) for k, v in value.items()}
            else:
                values[field.name] = None if value is None else rows(value)
        return dataclasses.replace(self, **values)

    def shard(self, rank: int, world_size: int) -> Self:
        """Rows ``rank::world_size`` — the share of one process."""
        return self.select(slice(rank, None, world_size))

    def to(self, device: torch.device | str) -> Self:
        """Tensor fields (and tensors in list fields) moved to ``device``."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Tensor):
                value = value.to(device)
            elif isinstance(value, list):
                value = [v.to(device) if isinstance(v, Tensor) else v for v in value]
            elif isinstance(value, dict):
                value = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in value.items()}
            values[field.name] = value
        return dataclasses.replace(self, **values)
