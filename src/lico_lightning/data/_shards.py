"""Streamed caption shards: open_clip_train's webdataset tar layout, split exactly over
processes × workers, with an epoch position that resumes mid-epoch.

**Format.** A shard is a tar file of samples ``{key}.jpg`` (or ``.jpeg`` / ``.png`` /
``.webp``) + ``{key}.txt`` (the caption), optionally ``{key}.json`` — the layout
``open_clip_train --train-data 'shards/{000000..000099}.tar'`` reads and img2dataset writes.
Shards are named by brace patterns (``shards/{000000..000009}.tar``), globs
(``shards/*.tar``), plain paths, several joined with ``::``, or any URL webdataset opens
(``pipe:``, ``http(s)://``, ``s3://`` through its ``gopen``). The sample counts come from a
``sizes.json`` beside the shards (open_clip_train's file, ``{"000000.tar": 1000, ...}``) or,
for local files, from reading the tar headers once (which also checks every sample's keys).

**Why webdataset, not litdata.** Users who outgrow a folder already have webdataset shards:
that is what open_clip_train and img2dataset produce. ``webdataset`` reads and writes them as
they are (its key rule, its ``gopen`` URL schemes and its ``TarWriter``, used here); Lightning's
``litdata`` streams only its own optimized chunk format, so every dataset would have to be
converted first.

**Split.** webdataset's ``split_by_node`` / ``split_by_worker`` hand out whole shards, so ranks
get different sample counts when shards are uneven or do not divide by ranks × workers — and a
DDP rank that runs out of batches first hangs the others in their next collective. Here the
split is by sample: the epoch's shard order (shuffled by ``(seed, epoch)``) is one sequence of
N samples; rank ``r`` takes a contiguous ``⌊N/R⌋`` or ``⌈N/R⌉`` of them, and every rank yields
the same number of batches ``K = ⌈⌈N/R⌉ / B⌉`` (full batches, then a shorter last one; in the
rare case a rank has one sample too few for K batches its last two batches are short). Every
sample is seen exactly once per epoch, whatever the shard sizes. Inside a rank, batch ``j`` is
built by dataloader worker ``j mod W`` from a contiguous part of the rank's samples, so a worker
opens only the shards its part touches (a shard at a boundary is opened by both neighbours;
local files are read by seeking, so each reads only its own members), mixed by a seeded
shuffle buffer. The whole plan is a pure function of ``(seed, epoch, shard sizes, R, W, B)``,
computed from indices before any image is read.

**Resume.** :meth:`ShardCaptionDataModule.state_dict` records the epoch and how many batches of
it were trained (the Trainer's own count; DDP ranks run in lockstep); after
``load_state_dict`` the interrupted epoch yields exactly its remaining batches (each worker
skips, without decoding, what it already delivered), the next epoch is whole again.
"""

from __future__ import annotations

import argparse
import glob
import io
import itertools
import json
import math
import os
import random
import tarfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lico_lightning._io import atomic_write, write_text
from lico_lightning._validation import check_int
from lico_lightning.data._caption_files import read_caption_file
from lico_lightning.data._captions import (
    CaptionDataModule,
    CaptionDataset,
    CaptionRecord,
    PhraseBox,
    _count_tokens,
)
from lico_lightning.data._sampler import _epoch_seed

__all__ = [
    "IMAGE_EXTENSIONS",
    "ShardCaptionDataModule",
    "ShardCaptionDataset",
    "expand_shard_urls",
    "read_shard_sizes",
    "write_shards",
    "write_shards_main",
]

#: image members a sample may hold, in order of preference
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_SIZES = "sizes.json"
_EXTRA = 'pip install "lico-lightning[shards]"'


def _webdataset() -> Any:
    try:
        import webdataset
    except ImportError as err:  # pragma: no cover - installed with the [shards]/[dev] extras
        raise ImportError(
            f"Caption shards need the `webdataset` package, which is not installed: {_EXTRA}."
        ) from err
    return webdataset


def _is_url(url: str) -> bool:
    return "://" in url or url.startswith("pipe:")


# ----------------------------------------------------------------------------- shard lists
def expand_shard_urls(pattern: str | Sequence[str]) -> list[str]:
    """The shards a pattern names, in order: brace ranges, globs, ``::``-joined patterns.

    Local names must exist (a glob or brace pattern that matches no file raises, naming the
    pattern); URLs (``pipe:``, ``http://``, ``s3://``, ...) are kept as they are.

    Args:
        pattern: ``"shards/{000000..000009}.tar"``, ``"shards/*.tar"``, ``"a.tar::b.tar"`` or
            a list of such patterns.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for i in range(3):
        ...     _ = (d / f"{i:06d}.tar").write_bytes(b"")
        >>> [pathlib.Path(u).name for u in expand_shard_urls(f"{d}/{{000000..000001}}.tar")]
        ['000000.tar', '000001.tar']
        >>> len(expand_shard_urls(str(d / "*.tar")))
        3
    """
    patterns = [pattern] if isinstance(pattern, (str, os.PathLike)) else list(pattern)
    if not patterns or not all(isinstance(p, (str, os.PathLike)) for p in patterns):
        raise TypeError(
            f"Expected `shards` to be a pattern string or a list of them, but got {pattern!r}."
        )
    expand = _webdataset().shardlists.expand_urls
    urls: list[str] = []
    for raw in patterns:
        matched: list[str] = []
        for url in expand(str(raw)):
            if _is_url(url):
                matched.append(url)
            elif glob.has_magic(url):
                matched += sorted(glob.glob(os.path.expanduser(url)))
            elif Path(url).expanduser().is_file():
                matched.append(str(Path(url).expanduser()))
            else:
                raise FileNotFoundError(
                    f"Expected the shard {url!r} of the pattern {str(raw)!r} to exist, but there "
                    "is no such file."
                )
        if not matched:
            raise FileNotFoundError(
                f"Expected the shard pattern {str(raw)!r} to match at least one file, but it "
                "matches none."
            )
        urls += matched
    repeated = sorted({u for u in urls if urls.count(u) > 1})
    if repeated:
        raise ValueError(
            f"Expected every shard once, but {repeated[:3]} are named more than once (their "
            "samples would be seen twice per epoch)."
        )
    return urls


# ----------------------------------------------------------------------------- reading tars
@dataclass
class _Sample:
    """One grouped sample of a shard: its key and member bytes by extension (``None`` when
    only counted)."""

    key: str
    members: dict[str, bytes | None]


def _iter_samples(url: str, wanted: Callable[[int], bool] | None = None) -> Iterator[_Sample]:
    """The samples of one shard in tar order, grouped by webdataset's key rule (the name up to
    the first dot of the base name; consecutive members with one key are one sample).

    ``wanted(i)`` says whether sample ``i``'s bytes are read; the others are counted only (a
    local file is read by seeking over them; ``None``: read none).
    """
    wds = _webdataset()
    split = wds.tariterators.base_plus_ext
    local = not _is_url(url)
    try:
        if local:
            tar = tarfile.open(url, mode="r:*")
        else:
            tar = tarfile.open(fileobj=wds.gopen(url, "rb"), mode="r|*")
    except (OSError, tarfile.TarError) as err:
        raise ValueError(
            f"Expected {url} to be a tar shard, but it could not be opened ({err})."
        ) from None
    index, current = -1, None
    try:
        with tar:
            for member in tar:
                if not member.isfile() or member.name.split("/")[-1].startswith("__"):
                    continue
                key, ext = split(member.name)
                if key is None:
                    continue
                ext = ext.lower()
                if current is None or key != current.key:
                    if current is not None:
                        yield current
                    index += 1
                    current = _Sample(key, {})
                if ext in current.members:
                    raise ValueError(
                        f"Expected each member once per sample, but shard {url}, sample "
                        f"{key!r} has two '.{ext}' members."
                    )
                data = None
                if wanted is not None and wanted(index):
                    reader = tar.extractfile(member)
                    data = reader.read() if reader is not None else b""
                current.members[ext] = data
            if current is not None:
                yield current
    except tarfile.TarError as err:
        raise ValueError(
            f"Expected {url} to be a whole tar shard, but reading it failed after sample "
            f"{index} ({err})."
        ) from None


def _check_sample(url: str, sample: _Sample) -> str:
    """The sample's image extension; a clear error when it lacks an image or a caption."""
    keys = sorted(sample.members)
    image = next((e for e in IMAGE_EXTENSIONS if e in sample.members), None)
    if image is None:
        raise ValueError(
            f"Expected an image ({', '.join('.' + e for e in IMAGE_EXTENSIONS)}) in every "
            f"sample, but shard {url}, sample {sample.key!r} has the keys {keys}."
        )
    if "txt" not in sample.members:
        raise ValueError(
            f"Expected a '.txt' caption in every sample, but shard {url}, sample "
            f"{sample.key!r} has the keys {keys}."
        )
    return image


def read_shard_sizes(urls: Sequence[str], sizes_file: str | None = None) -> list[int]:
    """Samples per shard: from ``sizes_file`` (default: a ``sizes.json`` beside the first
    shard, open_clip_train's ``{"<shard file name>": count}``), else by reading the headers of
    each local shard once, which also checks that every sample has an image and a ``.txt``
    caption (raising with the shard and the key).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> pairs = [CaptionRecord(str(d / "a.png"), ("a red circle", "a circle"))]
        >>> from PIL import Image
        >>> Image.new("RGB", (8, 8)).save(d / "a.png")
        >>> urls = write_shards(pairs, d / "out" / "%06d.tar", samples_per_shard=1)
        >>> read_shard_sizes([str(u) for u in urls])
        [1, 1]
    """
    urls = list(urls)
    if sizes_file is None and urls and not _is_url(urls[0]):
        beside = Path(urls[0]).parent / _SIZES
        sizes_file = str(beside) if beside.is_file() else None
    if sizes_file is not None:
        try:
            sizes = json.loads(Path(sizes_file).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(
                f"Expected {sizes_file} to be a JSON object of shard sizes, but it could not "
                f"be read ({err})."
            ) from None
        missing = [u for u in urls if os.path.basename(u) not in sizes]
        if not isinstance(sizes, dict) or missing:
            raise ValueError(
                f"Expected {sizes_file} to give the size of every shard, but it lacks "
                f"{[os.path.basename(u) for u in missing][:3]}."
            )
        return [int(sizes[os.path.basename(u)]) for u in urls]
    remote = [u for u in urls if _is_url(u)]
    if remote:
        raise ValueError(
            f"Expected the sample counts of the remote shards (e.g. {remote[0]!r}) in a "
            "`sizes_file` (open_clip_train's sizes.json), but got none."
        )
    counts = []
    for url in urls:
        n = 0
        for sample in _iter_samples(url):
            _check_sample(url, sample)
            n += 1
        counts.append(n)
    return counts


# ----------------------------------------------------------------------------- the epoch plan
def _rank_batch_sizes(
    total: int, rank: int, world_size: int, batch_size: int
) -> tuple[int, list[int]]:
    """``(start, sizes)``: rank ``rank``'s first position in the epoch sequence and the sizes
    of its batches; every rank gets the same number of batches."""
    base, extra = divmod(total, world_size)
    count = base + (rank < extra)
    start = rank * base + min(rank, extra)
    k = math.ceil(math.ceil(total / world_size) / batch_size)
    if base < k:
        raise ValueError(
            f"Expected at least {k} samples per process to give every one of the "
            f"{world_size} processes {k} batches of at most {batch_size}, but the shards hold "
            f"{total} samples. Use a larger batch size, fewer processes or more data."
        )
    sizes, left = [], count
    for j in range(k):  # full batches while every later batch can still get one sample
        size = min(batch_size, left - (k - 1 - j))
        sizes.append(size)
        left -= size
    return start, sizes


def _buffer_shuffle(items: list[Any], buffer: int, rng: random.Random) -> list[Any]:
    """webdataset's streaming shuffle, on indices: keep ``buffer`` items, emit a random one
    for each new item, shuffle the rest at the end. Item ``t`` of the output only depends on
    the first ``t + buffer`` inputs, so a stream needs at most ``buffer`` samples in memory."""
    held: list[Any] = []
    out: list[Any] = []
    for item in items:
        if len(held) < buffer:
            held.append(item)
            continue
        k = rng.randrange(buffer)
        out.append(held[k])
        held[k] = item
    rng.shuffle(held)
    return out + held


@dataclass(frozen=True)
class _WorkerPlan:
    """What one worker stream produces: its batches as lists of ``(shard, member)``."""

    shards: list[int]  # shard ids touched, in reading order
    batches: list[list[tuple[int, int]]]


def _epoch_plan(
    sizes: Sequence[int],
    *,
    seed: int,
    epoch: int,
    shuffle: bool,
    buffer: int,
    rank: int,
    world_size: int,
    workers: int,
    batch_size: int,
    streams: Sequence[int] | None = None,
) -> dict[int, _WorkerPlan]:
    """The batches of the worker streams ``streams`` (default: all) of ``rank`` in epoch
    ``epoch`` (a pure function of its arguments).

    Batch ``j`` of the rank belongs to stream ``j mod workers``; stream ``w`` reads a
    contiguous part of the rank's samples (after those of streams ``< w``) in the epoch's
    shard order.
    """
    order = list(range(len(sizes)))
    if shuffle:
        random.Random(_epoch_seed(seed, epoch)).shuffle(order)
    starts, at = [], 0  # position of each shard (in epoch order) in the epoch sequence
    for shard in order:
        starts.append(at)
        at += sizes[shard]
    start, batch_sizes = _rank_batch_sizes(at, rank, world_size, batch_size)

    def located(position: int) -> tuple[int, int]:
        lo, hi = 0, len(order) - 1
        while lo < hi:  # last shard starting at or before the position
            mid = (lo + hi + 1) // 2
            if starts[mid] <= position:
                lo = mid
            else:
                hi = mid - 1
        return order[lo], position - starts[lo]

    wanted = set(range(workers) if streams is None else streams)
    plans = {}
    for w in range(workers):
        own = batch_sizes[w::workers]
        count = sum(own)
        if w in wanted:
            positions = [located(p) for p in range(start, start + count)]
            touched = list(dict.fromkeys(s for s, _ in positions))  # in reading order
            if shuffle:
                rng = random.Random(_epoch_seed(seed, epoch) ^ (rank << 20 | w))
                positions = _buffer_shuffle(positions, buffer, rng)
            batches, at = [], 0
            for size in own:
                batches.append(positions[at : at + size])
                at += size
            plans[w] = _WorkerPlan(touched, batches)
        start += count
    return plans


# ----------------------------------------------------------------------------- training stream
class ShardCaptionDataset(IterableDataset):
    """Batches ``(image, tokens, index)`` streamed from caption shards, split exactly over
    processes and dataloader workers (see the module doc for the plan).

    Load it with ``DataLoader(dataset, batch_size=None, num_workers=W)``: the dataset batches
    itself. ``len(dataset)`` is this process's batches per epoch (the same on every rank).
    ``index`` is the sample's ``image_index`` from its ``.json`` (written by
    :func:`write_shards`: captions of one image share it) or else its position in the shard
    list (shard sizes summed), a stable id.

    Args:
        shards: shard pattern(s), as :func:`expand_shard_urls`.
        tokenizer: open_clip tokenizer (``tokenizer(list[str]) -> (B, S)``).
        context_length: the model's S; longer captions raise (unless ``truncate``).
        transform: PIL image → normalised ``(C, H, W)`` tensor.
        batch_size: samples per batch (a rank's last batch may be smaller).
        seed: seed of the shard order and the shuffle buffer (with the epoch).
        shuffle: shuffle shards and samples (``False``: shard order, tar order).
        shuffle_buffer: samples each worker holds to mix (memory: that many encoded samples).
        rank / world_size: this process and the number of processes (default: from
            ``torch.distributed`` when initialised, else 0 / 1).
        truncate: cut captions at the context length instead of raising.
        sizes_file: ``sizes.json`` of the shards (default: one beside the first shard, else
            the local shards' headers are read).

    Example:
        >>> import tempfile, pathlib
        >>> from lico_lightning.data import ShapesCaptionDataModule, open_clip_preprocessing
        >>> from lico_lightning.text import tiny_openclip_config
        >>> cfg = tiny_openclip_config(context_length=16)
        >>> shapes = ShapesCaptionDataModule(model_cfg=cfg, num_train=6)
        >>> shapes.setup("fit")
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> _ = write_shards(shapes.train_dataset, out / "train-%06d.tar", samples_per_shard=5)
        >>> pre = open_clip_preprocessing(model_cfg=cfg)
        >>> data = ShardCaptionDataset(f"{out}/train-{{000000..000002}}.tar", pre["tokenizer"],
        ...     16, shapes.transform(train=False), batch_size=4)
        >>> data.num_samples, len(data)
        (12, 3)
        >>> images, tokens, index = next(iter(DataLoader(data, batch_size=None)))
        >>> images.shape, tokens.shape, index.shape
        (torch.Size([4, 3, 32, 32]), torch.Size([4, 16]), torch.Size([4]))
    """

    def __init__(
        self,
        shards: str | Sequence[str],
        tokenizer: Any,
        context_length: int,
        transform: Callable[[Any], Tensor],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 1000,
        rank: int | None = None,
        world_size: int | None = None,
        truncate: bool = False,
        sizes_file: str | None = None,
    ) -> None:
        check_int("batch_size", batch_size, 1)
        check_int("seed", seed, 0)
        check_int("shuffle_buffer", shuffle_buffer, 1)
        self.urls = expand_shard_urls(shards)
        self.sizes = read_shard_sizes(self.urls, sizes_file)
        if sum(self.sizes) == 0:
            raise ValueError(f"Expected samples in the shards {shards!r}, but they hold none.")
        self.offsets = [0, *itertools.accumulate(self.sizes)][:-1]  # first sample id per shard
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.transform = transform
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.truncate = truncate
        self.epoch = 0
        self.skip_batches = 0
        self.set_rank(rank, world_size)

    @property
    def num_samples(self) -> int:
        """Samples per epoch over all processes."""
        return sum(self.sizes)

    def set_rank(self, rank: int | None = None, world_size: int | None = None) -> None:
        """This process's rank and the number of processes (``None``: ``torch.distributed``'s,
        or 0 / 1); checks that every process can get the same number of batches."""
        dist = torch.distributed
        initialised = dist.is_available() and dist.is_initialized()
        world_size = (
            (dist.get_world_size() if initialised else 1) if world_size is None else world_size
        )
        rank = (dist.get_rank() if initialised else 0) if rank is None else rank
        check_int("world_size", world_size, 1)
        if not 0 <= rank < world_size:
            raise ValueError(f"Expected 0 <= rank < {world_size}, but got {rank}.")
        _rank_batch_sizes(self.num_samples, rank, world_size, self.batch_size)  # raises early
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch (shard order and shuffle) and how many of this process's batches
        of it were already consumed (a resumed epoch yields only the rest). Call it before
        creating the loader's iterator: workers take a copy of the dataset then."""
        check_int("epoch", epoch, 0)
        check_int("skip_batches", skip_batches, 0)
        self.epoch, self.skip_batches = epoch, skip_batches

    def __len__(self) -> int:
        return len(
            _rank_batch_sizes(self.num_samples, self.rank, self.world_size, self.batch_size)[1]
        )

    def _plans(self, workers: int, streams: Sequence[int] | None = None) -> dict[int, _WorkerPlan]:
        return _epoch_plan(
            self.sizes,
            seed=self.seed,
            epoch=self.epoch,
            shuffle=self.shuffle,
            buffer=self.shuffle_buffer,
            rank=self.rank,
            world_size=self.world_size,
            workers=workers,
            batch_size=self.batch_size,
            streams=streams,
        )

    def planned_batches(self, workers: int) -> list[list[int]]:
        """This process's batches of the current epoch in loader order, as sample ids (the
        ``index`` without a ``.json``): the plan, before any shard is read; the already
        consumed ``skip_batches`` left out."""
        plans = self._plans(workers)
        streams = [
            [[self.offsets[s] + m for s, m in b] for b in plans[w].batches] for w in range(workers)
        ]
        order = [streams[j % workers][j // workers] for j in range(len(self))]
        return order[self.skip_batches :]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        # after k consumed batches, loader worker w produces what stream (w + k) mod W would
        stream = (worker + self.skip_batches) % workers
        done = len(range(stream, self.skip_batches, workers))
        yield from self._stream(self._plans(workers, [stream])[stream], done)

    def _stream(self, plan: _WorkerPlan, done: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        todo = plan.batches[done:]
        if not todo:
            return
        needed: dict[tuple[int, int], int] = {}
        for b, batch in enumerate(todo):
            for pos in batch:
                needed[pos] = b
        held: dict[tuple[int, int], tuple[str, _Sample]] = {}
        next_batch = 0
        read = {s for s, _ in needed}
        for shard in (s for s in plan.shards if s in read):  # skip shards already consumed
            url = self.urls[shard]
            count = 0
            for member, sample in enumerate(
                _iter_samples(url, lambda i, s=shard: (s, i) in needed)  # type: ignore[misc]
            ):
                count += 1
                if (shard, member) in needed:
                    held[(shard, member)] = (url, sample)
                while next_batch < len(todo) and all(p in held for p in todo[next_batch]):
                    yield self._collate([(*held.pop(p), p) for p in todo[next_batch]])
                    next_batch += 1
                if next_batch == len(todo):
                    return  # the rest of the shard belongs to the next worker
            if count != self.sizes[shard]:
                raise ValueError(
                    f"Expected {self.sizes[shard]} samples in shard {url} (its recorded size), "
                    f"but it holds {count}."
                )
        if next_batch < len(todo):
            raise ValueError(
                f"Expected the shards to hold their recorded sizes, but {len(needed) - sum(len(b) for b in todo[:next_batch])} "
                "planned samples were not found (a shard is shorter than its sizes.json says)."
            )

    def _collate(
        self, items: list[tuple[str, _Sample, tuple[int, int]]]
    ) -> tuple[Tensor, Tensor, Tensor]:
        from PIL import Image

        images, captions, index = [], [], []
        for url, sample, (shard, member) in items:
            ext = _check_sample(url, sample)
            caption = (sample.members["txt"] or b"").decode("utf-8").strip()
            where = f"shard {url}, sample {sample.key!r}"
            if not caption:
                raise ValueError(f"Expected a non-empty caption in {where}, but got ''.")
            n = _count_tokens(self.tokenizer, caption)
            if not self.truncate and n is not None and n > self.context_length:
                raise ValueError(
                    f"Expected every caption to fit the context length {self.context_length}, "
                    f"but {where} has {n} tokens ({caption!r}). Pass truncate=True to cut it."
                )
            meta = _meta(sample, where)
            try:
                with Image.open(io.BytesIO(sample.members[ext] or b"")) as img:
                    rgb = img.convert("RGB")
            except (OSError, SyntaxError, ValueError) as err:
                raise ValueError(
                    f"Expected a readable '.{ext}' image in {where}, but it could not be "
                    f"decoded ({type(err).__name__}: {err})."
                ) from None
            images.append(self.transform(rgb))
            captions.append(caption)
            index.append(int(meta.get("image_index", self.offsets[shard] + member)))
        tokens = self.tokenizer(captions).long()
        return torch.stack(images), tokens, torch.tensor(index, dtype=torch.long)


def _meta(sample: _Sample, where: str) -> dict[str, Any]:
    raw = sample.members.get("json")
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"Expected JSON in the '.json' member of {where}, but {err.msg}."
        ) from None
    if not isinstance(meta, dict):
        raise ValueError(
            f"Expected a JSON object in {where}'s '.json', but got {type(meta).__name__}."
        )
    return meta


# ----------------------------------------------------------------------------- evaluation splits
def _records_from_shards(urls: Sequence[str]) -> tuple[list[CaptionRecord], list[bytes]]:
    """Every sample of (small) evaluation shards in memory: one record per image (samples
    sharing a ``.json`` ``image_index`` are that image's captions, with their phrase boxes) and
    the image's encoded bytes."""
    groups: dict[Any, dict[str, Any]] = {}
    for url in urls:
        for member, sample in enumerate(_iter_samples(url, lambda i: True)):
            ext = _check_sample(url, sample)
            where = f"shard {url}, sample {sample.key!r}"
            meta = _meta(sample, where)
            caption = (sample.members["txt"] or b"").decode("utf-8").strip()
            key = ("image", meta["image_index"]) if "image_index" in meta else (url, member)
            group = groups.setdefault(
                key, {"bytes": sample.members[ext], "captions": [], "phrases": [], "size": None}
            )
            if "width" in meta and "height" in meta:
                group["size"] = (int(meta["width"]), int(meta["height"]))
            group["captions"].append(caption)
            group["phrases"].append(
                tuple(
                    PhraseBox(
                        p["phrase"],
                        (int(p["char_span"][0]), int(p["char_span"][1])),
                        tuple(float(v) for v in p["box"]),  # type: ignore[arg-type]
                        None
                        if p.get("distractor_box") is None
                        else tuple(float(v) for v in p["distractor_box"]),  # type: ignore[arg-type]
                    )
                    for p in meta.get("phrases", [])
                )
            )
    records, blobs = [], []
    for group in groups.values():
        records.append(
            CaptionRecord(None, tuple(group["captions"]), tuple(group["phrases"]), group["size"])
        )
        blobs.append(group["bytes"])
    return records, blobs


class _InMemoryShardDataset(CaptionDataset):
    """A caption split read whole from shards (encoded images in memory, decoded per item)."""

    def __init__(self, blobs: list[bytes], records: list[CaptionRecord], **kwargs: Any) -> None:
        super().__init__(records, **kwargs)
        self.blobs = blobs

    def _image(self, index: int) -> Any:
        from PIL import Image

        with Image.open(io.BytesIO(self.blobs[index])) as img:
            return img.convert("RGB")

    def load_image(self, index: int) -> Tensor:
        if self.transform is None:  # pragma: no cover - the data module always passes one
            raise ValueError(f"Expected a transform for image {index}, but got none.")
        return self.transform(self._image(index))

    def image_size_of(self, index: int) -> tuple[int, int]:
        size = self.records[index].size
        return size if size is not None else self._image(index).size


# ----------------------------------------------------------------------------- data module
class _PositionedLoader(DataLoader):
    """A DataLoader that sets its dataset's epoch and resume position right before each
    epoch's workers (which copy the dataset) start.

    It is resumable in Lightning's sense (``state_dict`` / ``load_state_dict``), but its
    position is kept by :meth:`ShardCaptionDataModule.state_dict` — the Trainer's count of
    trained batches, which a loader cannot know in general (a data fetcher may run ahead of
    training) — so its own state is empty.
    """

    def __init__(
        self, dataset: ShardCaptionDataset, position: Callable[[], tuple[int, int]], **kwargs: Any
    ) -> None:
        super().__init__(dataset, batch_size=None, **kwargs)
        self._position = position
        self.served = [0, 0]

    def __iter__(self) -> Any:
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        # The position is read at the first batch, not at iter(): Lightning creates the
        # iterator before its fit loop settles the epoch of a restart (a checkpoint saved
        # after an epoch's last batch resumes with the next epoch).
        dataset: Any = self.dataset
        epoch, skip = self._position()
        dataset.set_epoch(epoch, skip)
        self.served = [epoch, skip]  # batches of the epoch handed out (plain loops' position)
        for batch in super().__iter__():
            self.served[1] += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Empty: the position is the data module's state."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore here (see :meth:`state_dict`)."""


class ShardCaptionDataModule(CaptionDataModule):
    """Caption training streamed from webdataset shards (open_clip_train's layout).

    Training batches come from :class:`ShardCaptionDataset`: every sample once per epoch,
    split by sample over DDP processes and dataloader workers (every rank yields the same
    number of batches, so DDP never waits on a rank that ran out), shuffled as a pure function
    of ``(seed, epoch)``, and resumable mid-epoch: :meth:`state_dict` records the epoch and the
    batches the Trainer completed, and a resumed run sees exactly the epoch's remaining
    samples. The validation / test shards (``val_shards``, ``test_shards``: evaluation-sized)
    are read into memory once as a :class:`CaptionDataset`, so retrieval metrics, DDP
    evaluation and grounding probes (from the phrase boxes :func:`write_shards` stores in each
    sample's ``.json``) work as with every caption data module.

    Workers are started anew each epoch (not persistent): each takes the epoch's position when
    it starts. Which samples form which batch is reproducible; random augmentations (open_clip's
    training crop) are not part of that guarantee, as in every data module.

    Args:
        train_shards: training shard pattern(s) (:func:`expand_shard_urls`).
        val_shards: validation shards (``None``: no validation).
        test_shards: test shards (default: ``val_shards``).
        model_name / model_cfg: the open_clip model whose preprocessing and tokenizer to use.
        batch_size: batch size of every loader (a rank's last training batch may be smaller).
        num_workers: DataLoader workers (each streams its own part of the shards).
        seed: seed of the shard order and the shuffle buffer.
        shuffle_buffer: samples each training worker holds to mix.
        sizes_file: ``sizes.json`` of the training shards (default: beside them, or counted).
        truncate: cut captions longer than the context length instead of raising.
        zeroshot: optional image classification data module for zero-shot accuracy.

    Example:
        >>> import tempfile, pathlib
        >>> from lico_lightning.data import ShapesCaptionDataModule
        >>> from lico_lightning.text import tiny_openclip_config
        >>> cfg = tiny_openclip_config(context_length=16)
        >>> shapes = ShapesCaptionDataModule(model_cfg=cfg, num_train=8, num_val=4)
        >>> shapes.setup("fit")
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> _ = write_shards(shapes.train_dataset, out / "train-%06d.tar", samples_per_shard=6)
        >>> _ = write_shards(shapes.val_dataset, out / "val-%06d.tar")
        >>> dm = ShardCaptionDataModule(f"{out}/train-*.tar", f"{out}/val-000000.tar",
        ...                             model_cfg=cfg, batch_size=4, num_workers=0)
        >>> dm.setup("fit")
        >>> len(dm.train_dataloader()), dm.val_dataset.num_images
        (4, 4)
        >>> [p.phrase for p in dm.probes(2)] == [p.phrase for p in shapes.probes(2)]
        True
    """

    train_dataset: Any

    def __init__(
        self,
        train_shards: str | list[str],
        val_shards: str | list[str] | None = None,
        test_shards: str | list[str] | None = None,
        model_name: str = "ViT-B-32",
        model_cfg: dict[str, Any] | None = None,
        batch_size: int = 128,
        num_workers: int = 4,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        sizes_file: str | None = None,
        truncate: bool = False,
        zeroshot: pl.LightningDataModule | None = None,
    ) -> None:
        super().__init__(
            model_name=model_name,
            model_cfg=model_cfg,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            truncate=truncate,
            zeroshot=zeroshot,
        )
        check_int("shuffle_buffer", shuffle_buffer, 1)
        self.train_shards = train_shards
        self.val_shards = val_shards
        self.test_shards = test_shards if test_shards is not None else val_shards
        self.shuffle_buffer = shuffle_buffer
        self.sizes_file = sizes_file
        self._resume: dict[str, int] | None = None
        self._train_loader: _PositionedLoader | None = None
        self.epoch = 0

    def _eval_dataset(self, shards: str | list[str]) -> CaptionDataset:
        records, blobs = _records_from_shards(expand_shard_urls(shards))
        return _InMemoryShardDataset(
            blobs,
            records,
            tokenizer=self.tokenizer,
            context_length=self.context_length,
            transform=self.transform(False),
            image_size=self.image_size,
            resize_mode=self.preprocessing["resize_mode"],
            truncate=self.truncate,
        )

    def setup(self, stage: str | None = None) -> None:
        """Index the training shards (sizes, keys) and read the evaluation shards."""
        super().setup(stage)
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = ShardCaptionDataset(
                self.train_shards,
                self.tokenizer,
                self.context_length,
                self.transform(True),
                self.batch_size,
                seed=self.seed,
                shuffle=True,
                shuffle_buffer=self.shuffle_buffer,
                rank=0,
                world_size=1,
                truncate=self.truncate,
                sizes_file=self.sizes_file,
            )
        if stage in (None, "fit", "validate") and self.val_dataset is None and self.val_shards:
            self.val_dataset = self._eval_dataset(self.val_shards)
        if stage in (None, "test", "predict") and self.test_dataset is None and self.test_shards:
            self.test_dataset = self._eval_dataset(self.test_shards)

    def _rank(self) -> tuple[int | None, int | None]:
        trainer = self._trainer_or_none()
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return None, None  # torch.distributed's, or a single process

    def _trainer_or_none(self) -> Any:
        return getattr(self, "trainer", None)

    def _position(self) -> tuple[int, int]:
        """``(epoch, consumed batches)`` for the loader's next iterator."""
        trainer = self._trainer_or_none()
        epoch = self.epoch if trainer is None else trainer.fit_loop.epoch_progress.current.processed
        skip = 0
        if self._resume is not None and self._resume["epoch"] == epoch:
            skip = self._resume["batches"]
        self._resume = None  # only the interrupted epoch is partial
        return epoch, skip

    def train_dataloader(self) -> DataLoader:
        """This process's batches of the epoch (epoch and resume position set at each ``iter``).

        Without a Trainer, set ``dm.epoch`` before iterating for a new shuffle."""
        dataset = self.train_dataset
        if dataset is None:
            raise RuntimeError(
                "Expected `setup('fit')` to run before asking for the fit dataloader."
            )
        dataset.set_rank(*self._rank())
        self._train_loader = _PositionedLoader(
            dataset, self._position, num_workers=self.num_workers
        )
        return self._train_loader

    def val_dataloader(self) -> Any:
        """Validation pairs in order (``[]`` without ``val_shards``)."""
        return [] if self.val_dataset is None else super().val_dataloader()

    def test_dataloader(self) -> Any:
        """Test pairs in order (``[]`` without test / validation shards)."""
        return [] if self.test_dataset is None else super().test_dataloader()

    def _split_config(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "train_shards": self.train_shards,
            "shuffle_buffer": self.shuffle_buffer,
        }

    def _layout(self) -> dict[str, int]:
        dataset = self.train_dataset
        world = 1 if dataset is None else dataset.world_size
        return {
            "world_size": world,
            "workers": max(self.num_workers, 1),
            "batch_size": self.batch_size,
        }

    def state_dict(self) -> dict[str, Any]:
        """The split and the epoch position: ``{"split", "position": {"epoch", "batches",
        "world_size", "workers", "batch_size"}}`` (batches the Trainer completed in the epoch;
        without a Trainer, those the loader handed out)."""
        trainer = self._trainer_or_none()
        if trainer is not None:
            epoch = trainer.fit_loop.epoch_progress.current.processed
            batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        elif self._train_loader is not None:
            epoch, batches = self._train_loader.served
        else:
            epoch, batches = self.epoch, 0
        return {
            "split": self._split_config(),
            "position": {"epoch": epoch, "batches": batches, **self._layout()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the saved epoch where it stopped (a warning, and the epoch restarts, when
        the process / worker / batch layout differs: the plan would not match)."""
        super().load_state_dict(state_dict)
        position = state_dict.get("position")
        if position is None:
            return
        saved = {k: position[k] for k in ("world_size", "workers", "batch_size")}
        if saved != self._layout() and position["batches"] > 0:
            warnings.warn(
                f"{type(self).__name__}: the checkpoint stopped epoch {position['epoch']} after "
                f"{position['batches']} batches with {saved}, but this run has {self._layout()}; "
                "the epoch restarts from its first batch (its samples already seen are seen "
                "again). Resume with the checkpoint's layout to continue it exactly.",
                UserWarning,
                stacklevel=2,
            )
            return
        self._resume = {"epoch": int(position["epoch"]), "batches": int(position["batches"])}
        self.epoch = int(position["epoch"])


# ----------------------------------------------------------------------------- writing shards
def _encode_png(image: Tensor) -> bytes:
    """``(3, H, W)`` image in [0, 1] → PNG bytes."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_bytes(source: Any, records: Sequence[CaptionRecord], index: int) -> tuple[str, bytes]:
    record = records[index]
    render = getattr(source, "render", None)
    if record.image is None:
        if render is None:
            raise ValueError(
                f"Expected image {index} to have a file, or the dataset a `render(index)` "
                "method, but got neither."
            )
        return "png", _encode_png(render(index))
    ext = Path(record.image).suffix.lower().lstrip(".")
    if ext in IMAGE_EXTENSIONS:
        try:
            return ext, Path(record.image).read_bytes()
        except OSError as err:
            raise ValueError(f"Expected an image file at {record.image}, but {err}.") from None
    from PIL import Image

    with Image.open(record.image) as img:  # another format: stored as PNG
        buffer = io.BytesIO()
        img.convert("RGB").save(buffer, format="PNG")
    return "png", buffer.getvalue()


def _sample_meta(record: CaptionRecord, image: int, caption: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"image_index": image, "caption_index": caption}
    if record.size is not None:
        meta["width"], meta["height"] = record.size
    if caption < len(record.phrases) and record.phrases[caption]:
        meta["phrases"] = [
            {
                "phrase": p.phrase,
                "char_span": list(p.char_span),
                "box": list(p.box),
                "distractor_box": None if p.distractor_box is None else list(p.distractor_box),
            }
            for p in record.phrases[caption]
        ]
    return meta


def write_shards(
    source: CaptionDataset | Sequence[CaptionRecord],
    out_pattern: str | Path,
    samples_per_shard: int = 1000,
) -> list[Path]:
    """Write caption data as webdataset shards open_clip_train reads, one file at a time and
    atomically (a shard appears whole or not at all), plus their ``sizes.json``.

    Every (image, caption) pair is a sample ``{key}.{jpg|png|...}`` + ``{key}.txt`` +
    ``{key}.json`` (``image_index``, ``caption_index``, the image's ``width`` / ``height`` and
    the caption's phrases with boxes, so :class:`ShardCaptionDataModule` can draw grounding
    probes). Image files are stored as they are (other formats than jpg/png/webp as PNG);
    generated images (a dataset with ``render(index)`` such as the shapes scenes) as PNG.
    Tar entries carry a fixed mtime: the same data gives byte-identical shards. The folder's
    ``sizes.json`` gets these shards' sizes (entries of other shards there are kept).

    Args:
        source: a :class:`CaptionDataset` (e.g. ``ShapesCaptionDataModule``'s
            ``train_dataset``) or records (e.g. :func:`read_caption_file`'s).
        out_pattern: shard path with one integer field, e.g. ``"shards/train-%06d.tar"``.
        samples_per_shard: samples per shard (the last one holds the rest).

    Returns:
        The shard paths written, in order.

    Example:
        >>> import tempfile, pathlib
        >>> from lico_lightning.data import ShapesCaptionDataModule
        >>> from lico_lightning.text import tiny_openclip_config
        >>> shapes = ShapesCaptionDataModule(model_cfg=tiny_openclip_config(), num_train=5)
        >>> shapes.setup("fit")
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> [p.name for p in write_shards(shapes.train_dataset, out / "%06d.tar", 4)]
        ['000000.tar', '000001.tar', '000002.tar']
        >>> (out / "sizes.json").read_text()
        '{"000000.tar": 4, "000001.tar": 4, "000002.tar": 2}'
    """
    check_int("samples_per_shard", samples_per_shard, 1)
    pattern = str(out_pattern)
    try:
        names = {pattern % 0, pattern % 1}
    except (TypeError, ValueError):
        names = set()
    if len(names) != 2:
        raise ValueError(
            "Expected `out_pattern` to hold one integer field such as '%06d' "
            f"('shards/train-%06d.tar'), but got {pattern!r}."
        )
    if isinstance(source, CaptionDataset):
        records: Sequence[CaptionRecord] = source.records
    elif isinstance(source, Sequence) and all(isinstance(r, CaptionRecord) for r in source):
        records = source
    else:
        raise TypeError(
            f"Expected a CaptionDataset or a sequence of CaptionRecord, but got "
            f"{type(source).__name__}."
        )
    if not records:
        raise ValueError("Expected at least one image with captions to write, but got none.")
    folders = {Path(pattern % 0).parent, Path(pattern % 1).parent}
    if len(folders) != 1:
        raise ValueError(
            f"Expected `out_pattern` to put every shard in one folder, but got {pattern!r}."
        )
    wds = _webdataset()
    pairs = [(i, j) for i, r in enumerate(records) for j in range(len(r.captions))]
    written: list[Path] = []
    sizes: dict[str, int] = {}
    for shard, start in enumerate(range(0, len(pairs), samples_per_shard)):
        path = Path(pattern % shard)
        chunk = pairs[start : start + samples_per_shard]
        cache: tuple[int, tuple[str, bytes]] | None = None
        with atomic_write(path) as tmp, open(tmp, "wb") as stream:
            with wds.TarWriter(stream, encoder=False, mtime=0.0) as tar:
                for i, j in chunk:
                    if cache is None or cache[0] != i:
                        cache = (i, _image_bytes(source, records, i))
                    ext, data = cache[1]
                    meta = _sample_meta(records[i], i, j)
                    tar.write(
                        {
                            "__key__": f"{i:08d}_{j:03d}",
                            ext: data,
                            "txt": records[i].captions[j].encode("utf-8"),
                            "json": json.dumps(meta).encode("utf-8"),
                        }
                    )
        written.append(path)
        sizes[path.name] = len(chunk)
    index = folders.pop() / _SIZES  # one per folder, as open_clip_train reads it: merged
    try:
        known = json.loads(index.read_text()) if index.is_file() else {}
    except json.JSONDecodeError:
        known = {}
    known = known if isinstance(known, dict) else {}
    write_text(index, json.dumps({**known, **sizes}))
    return written


def write_shards_main(argv: Sequence[str] | None = None) -> list[Path]:
    """``lico-write-shards``: the shapes scenes or a CSV / JSONL caption file as shards.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> paths = write_shards_main([f"{out}/train-%06d.tar", "--shapes", "6",
        ...                            "--image-size", "32", "--samples-per-shard", "5"])
        ... # doctest: +ELLIPSIS
        wrote 3 shards (12 samples): .../train-000000.tar ... .../train-000002.tar
        >>> [p.name for p in paths]
        ['train-000000.tar', 'train-000001.tar', 'train-000002.tar']
    """
    parser = argparse.ArgumentParser(
        prog="lico-write-shards",
        description="Write caption data as webdataset shards (open_clip_train's layout).",
    )
    parser.add_argument(
        "out_pattern", help="shard path with one integer field: shards/train-%%06d.tar"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--shapes", type=int, metavar="N", help="N generated shape scenes")
    source.add_argument("--caption-file", help="a CSV (header row) or JSONL caption file")
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument(
        "--split",
        choices=("train", "val", "test"),
        default="train",
        help="shapes: which split's scenes (seeded per split)",
    )
    parser.add_argument("--image-size", type=int, default=64, help="shapes: image side")
    parser.add_argument("--max-objects", type=int, default=3, help="shapes: shapes per scene")
    parser.add_argument("--seed", type=int, default=0, help="shapes: seed of the scenes")
    parser.add_argument("--image-root", help="caption file: folder of relative image paths")
    args = parser.parse_args(argv)
    records: CaptionDataset | list[CaptionRecord]
    if args.shapes is not None:
        from lico_lightning.data._shapes import ShapesCaptionDataModule

        check_int("image_size", args.image_size, 8)
        cfg = {"vision_cfg": {"image_size": args.image_size}, "text_cfg": {"context_length": 77}}
        counts = {"num_train": 1, "num_val": 1, "num_test": 1, f"num_{args.split}": args.shapes}
        shapes = ShapesCaptionDataModule(
            model_cfg=cfg, max_objects=args.max_objects, seed=args.seed, **counts
        )
        records = shapes.make_dataset(args.split)
    else:
        records = read_caption_file(args.caption_file, args.image_root)
    paths = write_shards(records, args.out_pattern, args.samples_per_shard)
    listed = records.records if isinstance(records, CaptionDataset) else records
    total = sum(len(r.captions) for r in listed)
    print(f"wrote {len(paths)} shards ({total} samples): {paths[0]} ... {paths[-1]}")
    return paths


if __name__ == "__main__":  # pragma: no cover
    write_shards_main()
