"""The one probe draw: which items of a dataset a monitor explains, from a seeded torch generator.

Every monitor and every host (Trainer, Fabric, plain loop) draws through
:func:`draw_probe_indices` and loads through :func:`probe_items`, so one seed means one probe
set everywhere. A dataset may define its own draw — a method ``draw_probe_indices(num,
generator)`` returning keys and ``probe(*key)`` loading one (e.g.
:class:`~lico_lightning.data.CaptionDataset`: ``(pair, phrase)`` keys, one phrase per image);
any other map-style dataset gives the first ``num`` of ``torch.randperm(len(dataset),
generator=generator)`` and loads ``dataset[i]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lico_lightning._validation import check_int

__all__ = ["draw_probe_indices", "draw_probes", "probe_items"]


def random_order(size: int, generator: torch.Generator) -> list[int]:
    """``torch.randperm(size, generator=generator)`` as a list: the order every probe draw reads.

    Args:
        size: number of candidates.
        generator: a seeded ``torch.Generator`` (its state advances).

    Example:
        >>> random_order(5, torch.Generator().manual_seed(0))
        [4, 0, 1, 3, 2]
    """
    check_int("size", size, 0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"Expected `generator` to be a torch.Generator, but got {type(generator).__name__}."
        )
    return torch.randperm(size, generator=generator).tolist()


def _own_draw(dataset: Any) -> Any:
    own = getattr(dataset, "draw_probe_indices", None)
    return own if callable(own) and callable(getattr(dataset, "probe", None)) else None


def draw_probe_indices(dataset: Any, num: int, generator: torch.Generator) -> list[Any]:
    """The keys of ``num`` probe items of ``dataset``, drawn without replacement.

    Args:
        dataset: a map-style dataset (with ``__len__``), or one with its own
            ``draw_probe_indices(num, generator)`` and ``probe(*key)``.
        num: items to draw (fewer when the dataset has fewer).
        generator: a seeded ``torch.Generator``.

    Returns:
        ``list[int]`` positions for a plain dataset; the dataset's own keys (e.g.
        ``(pair, phrase)`` tuples) otherwise.

    Example:
        >>> draw_probe_indices(list("abcdef"), 3, torch.Generator().manual_seed(0))
        [2, 5, 3]
        >>> torch.randperm(6, generator=torch.Generator().manual_seed(0))[:3].tolist()
        [2, 5, 3]
    """
    check_int("num", num, 1)
    own = _own_draw(dataset)
    if own is not None:
        return list(own(num, generator))
    try:
        size = len(dataset)
    except TypeError:
        raise TypeError(
            "Expected a map-style dataset (with __len__) to draw probes from, but got "
            f"{type(dataset).__name__}; pass the probes explicitly instead."
        ) from None
    return random_order(size, generator)[:num]


def probe_items(dataset: Any, indices: Sequence[Any]) -> list[Any]:
    """The items of keys drawn by :func:`draw_probe_indices`: ``dataset.probe(*key)`` for a
    dataset with its own draw, else ``dataset[i]``.

    Example:
        >>> probe_items(list("abcdef"), [2, 5, 3])
        ['c', 'f', 'd']
    """
    if _own_draw(dataset) is not None:
        return [dataset.probe(*(int(k) for k in key)) for key in indices]
    return [dataset[int(i)] for i in indices]


def draw_probes(dataset: Any, num: int, generator: torch.Generator) -> list[Any]:
    """``num`` probe items of ``dataset``: :func:`probe_items` of :func:`draw_probe_indices`.

    Example:
        >>> draw_probes(list("abcdef"), 3, torch.Generator().manual_seed(0))
        ['c', 'f', 'd']
    """
    return probe_items(dataset, draw_probe_indices(dataset, num, generator))
