"""Caption shards: open_clip_train's webdataset layout read back exactly, split over processes
× workers with every sample once (2 gloo processes × 2 workers), a resumed epoch that sees
every remaining sample once, the writer, and the errors that name the shard and key.

The test shards are written with webdataset's own ``TarWriter`` (not ours): ``{key}.jpg`` /
``.png`` + ``{key}.txt`` with a distinct caption per sample, so the caption a batch row
carries identifies its sample independently of the ``index`` the reader computes.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import webdataset as wds
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from tests._ddp import run_in_gloo_group
from torch.utils.data import DataLoader

from lico_lightning.data import (
    CaptionRecord,
    PhraseBox,
    ShapesCaptionDataModule,
    ShardCaptionDataModule,
    ShardCaptionDataset,
    expand_shard_urls,
    open_clip_preprocessing,
    read_caption_file,
    read_shard_sizes,
    write_shards,
    write_shards_main,
)
from lico_lightning.data._shards import _epoch_plan
from lico_lightning.text import tiny_openclip_config

CFG = tiny_openclip_config(context_length=16)
TOKENIZER = open_clip_preprocessing(model_cfg=CFG)["tokenizer"]
SIZES = (7, 3, 11, 1, 8)  # uneven on purpose: 30 samples in 5 shards


def to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)


def caption(n: int) -> str:
    return f"photo number {n}"


def make_shards(folder: Path, sizes=SIZES, size: int = 16) -> list[str]:
    """Shards of ``sizes`` samples written by webdataset itself; sample ``n`` (counted over
    the shards in order) has the caption ``photo number n`` and a flat image of grey ``n``."""
    folder.mkdir(parents=True, exist_ok=True)
    n, urls = 0, []
    for s, count in enumerate(sizes):
        url = folder / f"{s:06d}.tar"
        with wds.TarWriter(str(url)) as tar:
            for _ in range(count):
                buf = io.BytesIO()
                Image.new("RGB", (size, size), (n, n, n)).save(buf, format="PNG")
                ext = "png" if n % 2 else "jpg"  # both image kinds (jpg bytes are PNG: PIL sniffs)
                tar.write({"__key__": f"s{n:04d}", ext: buf.getvalue(), "txt": caption(n)})
                n += 1
        urls.append(str(url))
    return urls


def sample_of(tokens: torch.Tensor) -> list[int]:
    """The sample number each row's caption names (an independent identity)."""
    lookup = {tuple(TOKENIZER([caption(n)])[0].tolist()): n for n in range(200)}
    return [lookup[tuple(row.tolist())] for row in tokens]


def dataset(pattern, **kwargs) -> ShardCaptionDataset:
    kwargs.setdefault("batch_size", 4)
    return ShardCaptionDataset(pattern, TOKENIZER, 16, to_tensor, **kwargs)


# ----------------------------------------------------------------------------- the plan
@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [2, 4, 7])
def test_the_plan_gives_every_sample_once_and_every_rank_the_same_batch_count(
    world_size, workers, batch_size
) -> None:
    sizes = [7, 3, 11, 1, 8, 0, 5]
    everything = Counter((s, m) for s, n in enumerate(sizes) for m in range(n))
    for epoch in (0, 1):
        seen: Counter = Counter()
        counts = []
        for rank in range(world_size):
            plans = _epoch_plan(
                sizes, seed=3, epoch=epoch, shuffle=True, buffer=5, rank=rank,
                world_size=world_size, workers=workers, batch_size=batch_size,
            )  # fmt: skip
            batches = [b for p in plans.values() for b in p.batches]
            counts.append(len(batches))
            assert all(1 <= len(b) <= batch_size for b in batches)
            seen.update(pos for b in batches for pos in b)
        assert seen == everything
        assert len(set(counts)) == 1, counts
        # DDP lockstep needs equal batch counts; fewer batches than ceil(N/R/B) would drop data
        assert counts[0] == math.ceil(math.ceil(sum(sizes) / world_size) / batch_size)


def test_the_order_is_a_function_of_seed_and_epoch() -> None:
    def order(seed, epoch):
        plans = _epoch_plan(
            SIZES, seed=seed, epoch=epoch, shuffle=True, buffer=4, rank=0, world_size=1,
            workers=2, batch_size=4,
        )  # fmt: skip
        return [b for p in plans.values() for b in p.batches]

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2)
    assert order(0, 1) != order(1, 1)


# ----------------------------------------------------------------------------- reading
@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_yields_the_planned_batches_with_their_own_images_and_captions(
    tmp_path, workers
) -> None:
    make_shards(tmp_path)
    data = dataset(f"{tmp_path}/{{000000..000004}}.tar", shuffle_buffer=5)
    data.set_epoch(2)
    batches = list(DataLoader(data, batch_size=None, num_workers=workers))
    assert len(batches) == len(data) == 8  # ceil(30 / 4)
    planned = data.planned_batches(max(workers, 1))
    for (images, tokens, index), plan in zip(batches, planned, strict=True):
        samples = sample_of(tokens)
        assert index.tolist() == plan == samples  # index = position in the shard list
        grey = images[:, 0, 0, 0] * 255  # the image of sample n is grey n
        assert torch.allclose(grey, torch.tensor(samples, dtype=torch.float32), atol=0.5)
    assert sorted(i for b in planned for i in b) == list(range(30))


def test_a_resumed_epoch_yields_exactly_the_remaining_batches(tmp_path) -> None:
    make_shards(tmp_path)
    data = dataset(str(tmp_path / "*.tar"), shuffle_buffer=3)
    data.set_epoch(1)
    full = [sample_of(t) for _, t, _ in DataLoader(data, batch_size=None, num_workers=2)]
    for skip in (1, 3, 8):
        data.set_epoch(1, skip_batches=skip)
        rest = [sample_of(t) for _, t, _ in DataLoader(data, batch_size=None, num_workers=2)]
        assert rest == full[skip:]


def _ddp_two_workers(rank: int, world_size: int, pattern: str) -> tuple[list[list[int]], int]:
    data = dataset(pattern, shuffle_buffer=4)  # rank and world size from torch.distributed
    data.set_epoch(1)
    # a spawned process defaults to spawned workers, which would import everything again
    loader = DataLoader(data, batch_size=None, num_workers=2, multiprocessing_context="fork")
    return [sample_of(t) for _, t, _ in loader], data.rank


@pytest.mark.distributed
def test_two_processes_times_two_workers_see_every_sample_exactly_once(tmp_path) -> None:
    make_shards(tmp_path)
    results = run_in_gloo_group(_ddp_two_workers, f"{tmp_path}/{{000000..000004}}.tar")
    assert [rank for _, rank in results] == [0, 1]
    seen = [n for batches, _ in results for b in batches for n in b]
    assert sorted(seen) == list(range(30))  # the union is everything, each once
    assert len(results[0][0]) == len(results[1][0]) == 4  # 15 samples each: 4, 4, 4, 3


# ----------------------------------------------------------------------------- resume in a Trainer
class Recorder(pl.LightningModule):
    """Records the samples of every training batch (by caption) and trains nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, list[int]]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, sample_of(batch[1])))
        return (self.w * 0).sum() + self.w.sum() ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path: Path, data: ShardCaptionDataModule, **kwargs) -> Recorder:
    model = Recorder()
    ckpt_path = kwargs.pop("ckpt_path", None)
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, **kwargs,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, data, ckpt_path=ckpt_path)
    # Lightning finds the loader resumable (its position is the data module's state)
    assert not [w for w in caught if "not resumable" in str(w.message)]
    return model


@pytest.mark.parametrize("stop_after", [3, 8])
def test_a_run_resumed_mid_epoch_sees_every_remaining_sample_once(tmp_path, stop_after) -> None:
    make_shards(tmp_path / "shards")
    pattern = str(tmp_path / "shards" / "*.tar")

    def module() -> ShardCaptionDataModule:
        return ShardCaptionDataModule(
            pattern, model_cfg=CFG, batch_size=4, num_workers=2, shuffle_buffer=4
        )

    whole = _fit(tmp_path / "whole", module(), max_epochs=2)
    every = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=stop_after)
    first = _fit(tmp_path / "a", module(), max_steps=stop_after, callbacks=[every])
    ckpt = next((tmp_path / "ckpt").glob("*.ckpt"))
    state = torch.load(ckpt, weights_only=False)["ShardCaptionDataModule"]["position"]
    assert (state["epoch"], state["batches"]) == (0, stop_after)  # the Trainer's count
    rest = _fit(tmp_path / "b", module(), max_epochs=2, ckpt_path=ckpt)
    resumed = first.seen + rest.seen
    # the interrupted epoch: each sample once, in the uninterrupted run's order
    assert resumed == whole.seen
    for epoch in (0, 1):
        samples = [n for e, b in resumed if e == epoch for n in b]
        assert sorted(samples) == list(range(30))


class RankRecorder(Recorder):
    """A :class:`Recorder` that leaves each process's record in a file (``ddp_spawn``)."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out

    def on_train_end(self) -> None:
        Path(self.out, f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))


@pytest.mark.distributed
def test_lightning_ddp_gives_the_ranks_equal_batch_counts_over_uneven_shards(tmp_path) -> None:
    """The data module under a real 2-process Trainer: the ranks come from the Trainer, the
    uneven shards (7, 3, 11, 1, 8) give both ranks 4 batches, no rank waits for the other,
    and each epoch's union is every sample once."""
    make_shards(tmp_path / "shards")
    dm = ShardCaptionDataModule(
        str(tmp_path / "shards" / "*.tar"), model_cfg=CFG, batch_size=4, num_workers=0
    )
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(RankRecorder(str(tmp_path)), dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in (0, 1):
        batches = [[b for e, b in seen if e == epoch] for seen in ranks]
        assert [len(b) for b in batches] == [4, 4]
        assert sorted(n for rank in batches for b in rank for n in b) == list(range(30))


def test_a_different_layout_restarts_the_epoch_with_a_warning(tmp_path) -> None:
    make_shards(tmp_path)
    dm = ShardCaptionDataModule(str(tmp_path / "*.tar"), model_cfg=CFG, batch_size=4, num_workers=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    iterator = iter(loader)
    consumed = [sample_of(next(iterator)[1]) for _ in range(3)]
    state = dm.state_dict()  # no Trainer: the batches the loader handed out
    assert state["position"]["batches"] == 3
    same = ShardCaptionDataModule(
        str(tmp_path / "*.tar"), model_cfg=CFG, batch_size=4, num_workers=0
    )
    same.setup("fit")
    same.load_state_dict(state)
    rest = [sample_of(t) for _, t, _ in same.train_dataloader()]
    assert sorted(n for b in consumed + rest for n in b) == list(range(30))
    other = ShardCaptionDataModule(
        str(tmp_path / "*.tar"), model_cfg=CFG, batch_size=5, num_workers=0
    )
    other.setup("fit")
    with pytest.warns(UserWarning, match="restarts from its first batch"):
        other.load_state_dict(state)
    assert len(list(other.train_dataloader())) == 6  # the whole epoch: 30 / 5


# ----------------------------------------------------------------------------- writing
def test_shapes_shards_hold_the_scenes_captions_and_boxes(tmp_path) -> None:
    shapes = ShapesCaptionDataModule(model_cfg=CFG, num_train=5, num_val=6, batch_size=4)
    shapes.setup("fit")
    paths = write_shards(shapes.val_dataset, tmp_path / "val-%06d.tar", samples_per_shard=5)
    assert [p.name for p in paths] == ["val-000000.tar", "val-000001.tar", "val-000002.tar"]
    assert read_shard_sizes([str(p) for p in paths]) == [5, 5, 2]
    dm = ShardCaptionDataModule(
        str(tmp_path / "val-00000[0-1].tar"), str(tmp_path / "val-*.tar"), model_cfg=CFG,
        batch_size=4, num_workers=0,
    )  # fmt: skip
    dm.setup("validate")
    source, read = shapes.val_dataset, dm.val_dataset
    assert read.records == source.records  # captions, phrases, boxes, sizes
    for i in range(source.num_images):  # PNG of the render: equal up to 8-bit rounding
        torch.testing.assert_close(read.load_image(i), source.load_image(i), atol=0.02, rtol=0)
    assert [p.box.tolist() for p in dm.probes(3)] == [p.box.tolist() for p in shapes.probes(3)]
    again = write_shards(shapes.val_dataset, tmp_path / "again-%06d.tar", samples_per_shard=5)
    assert again[0].read_bytes() == paths[0].read_bytes()  # byte-identical: fixed mtime
    assert json.loads((tmp_path / "sizes.json").read_text())["val-000002.tar"] == 2


def test_a_caption_file_becomes_shards_with_the_image_files_bytes(tmp_path) -> None:
    for name, colour in (("a.png", (200, 0, 0)), ("b.jpg", (0, 0, 200))):
        Image.new("RGB", (20, 12), colour).save(tmp_path / name)
    (tmp_path / "pairs.csv").write_text(
        "image,caption,phrase,box\na.png,a red block,red block,1 2 8 9\n"
        "b.jpg,a blue block,,\na.png,red on grey,,\n"
    )
    records = read_caption_file(tmp_path / "pairs.csv")
    paths = write_shards_main(
        [str(tmp_path / "out" / "%04d.tar"), "--caption-file", str(tmp_path / "pairs.csv")]
    )
    # webdataset itself reads ours back
    samples = list(wds.WebDataset([str(p) for p in paths], shardshuffle=False))
    assert [s["txt"].decode() for s in samples] == ["a red block", "red on grey", "a blue block"]
    assert samples[0]["png"] == (tmp_path / "a.png").read_bytes()
    assert samples[2]["jpg"] == (tmp_path / "b.jpg").read_bytes()
    assert json.loads(samples[0]["json"])["phrases"][0]["box"] == [1.0, 2.0, 8.0, 9.0]
    dm = ShardCaptionDataModule(
        str(paths[0]), str(paths[0]), model_cfg=CFG, batch_size=2, num_workers=0
    )
    dm.setup("validate")
    assert [r.captions for r in dm.val_dataset.records] == [r.captions for r in records]
    assert dm.val_dataset.records[0].phrases[0] == (PhraseBox("red block", (2, 11), (1, 2, 8, 9)),)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors_before_any_work(tmp_path) -> None:
    make_shards(tmp_path / "ok", sizes=(2,))
    with pytest.raises(FileNotFoundError, match=r"pattern '.*/nothing-\*\.tar' to match"):
        expand_shard_urls(str(tmp_path / "nothing-*.tar"))
    with pytest.raises(FileNotFoundError, match=r"000001\.tar' of the pattern"):
        expand_shard_urls(f"{tmp_path}/ok/{{000000..000001}}.tar")
    with pytest.raises(ValueError, match="more than once"):
        expand_shard_urls([str(tmp_path / "ok" / "000000.tar")] * 2)
    bad = tmp_path / "bad" / "000003.tar"
    bad.parent.mkdir()
    with wds.TarWriter(str(bad)) as tar:
        tar.write({"__key__": "fine", "jpg": b"x", "txt": "ok"})
        tar.write({"__key__": "abc", "jpg": b"x"})
    with pytest.raises(
        ValueError, match=r"'\.txt' caption.*000003\.tar, sample 'abc' has the keys \['jpg'\]"
    ):
        dataset(str(bad))
    with pytest.raises(ValueError, match="remote shards"):
        read_shard_sizes(["pipe:cat x.tar"])
    with pytest.raises(ValueError, match="samples_per_shard"):
        write_shards([CaptionRecord(None, ("a",))], tmp_path / "%d.tar", samples_per_shard=0)
    with pytest.raises(ValueError, match="one integer field"):
        write_shards([CaptionRecord(None, ("a",))], tmp_path / "x.tar")
    with pytest.raises(ValueError, match=r"samples per process"):
        dataset(str(tmp_path / "ok" / "*.tar"), batch_size=1, rank=0, world_size=2).set_rank(0, 3)
    assert not list(tmp_path.glob("*.tar"))  # nothing was written


def test_a_pipe_url_streams_with_a_sizes_file(tmp_path) -> None:
    urls = make_shards(tmp_path, sizes=(3, 2))
    (tmp_path / "sizes.json").write_text(json.dumps({"000000.tar": 3, "000001.tar": 2}))
    data = dataset(
        [f"pipe:cat {u}" for u in urls], sizes_file=str(tmp_path / "sizes.json"), batch_size=2
    )
    samples = [n for _, t, _ in DataLoader(data, batch_size=None) for n in sample_of(t)]
    assert sorted(samples) == list(range(5))
