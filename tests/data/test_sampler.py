"""ResumableRandomSampler: order = f(seed, epoch), and a real Trainer resume sees the same order."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from lico_lightning.data import DigitsDataModule, ResumableRandomSampler


def _order(seed: int, epoch: int, n: int = 50, num_samples: int | None = None) -> list[int]:
    s = ResumableRandomSampler(n, seed=seed, num_samples=num_samples)
    s.set_epoch(epoch)
    return list(s)


def test_order_is_a_pure_function_of_seed_and_epoch() -> None:
    for epoch in range(4):
        assert _order(3, epoch) == _order(3, epoch)  # two fresh instances agree
        assert sorted(_order(3, epoch)) == list(range(50))  # a permutation
    orders = {tuple(_order(3, e)) for e in range(4)}
    assert len(orders) == 4  # epochs differ
    assert _order(3, 0) != _order(4, 0)  # seeds differ
    assert _order(0, 1) != _order(1, 0)  # no (seed + epoch) collisions


def test_iterating_twice_in_one_epoch_repeats_the_order() -> None:
    s = ResumableRandomSampler(20, seed=1)
    s.set_epoch(5)
    assert list(s) == list(s)


def test_does_not_consume_the_global_rng() -> None:
    state = torch.get_rng_state()
    _order(0, 0)
    _order(0, 7, num_samples=120)
    assert torch.equal(state, torch.get_rng_state())


def test_num_samples_concatenates_full_passes() -> None:
    order = _order(2, 3, n=10, num_samples=25)
    assert len(order) == 25 == len(ResumableRandomSampler(10, num_samples=25))
    assert sorted(order[:10]) == list(range(10)) and sorted(order[10:20]) == list(range(10))
    assert len(set(order[20:])) == 5
    assert _order(2, 3, n=10, num_samples=7) == order[:7]


def test_state_dict_round_trip() -> None:
    a = ResumableRandomSampler(30, seed=9)
    a.set_epoch(4)
    b = ResumableRandomSampler(30, seed=0)
    b.load_state_dict(a.state_dict())
    assert list(a) == list(b)
    with pytest.raises(ValueError, match="for 30 items, but got one for 31"):
        ResumableRandomSampler(30).load_state_dict(ResumableRandomSampler(31).state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_items": 0}, "num_items"),
        ({"num_items": 5, "seed": -1}, "seed"),
        ({"num_items": 5, "num_samples": 0}, "num_samples"),
    ],
)
def test_bad_arguments(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ResumableRandomSampler(**kwargs)
    with pytest.raises(ValueError, match="epoch"):
        ResumableRandomSampler(3).set_epoch(-1)


# ------------------------------------------------------------------ with a real Trainer
class _RecordOrder(pl.LightningModule):
    """Tiny linear classifier that records the dataset indices of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(3 * 8 * 8, 10)
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch, batch_idx):
        x, y, index = batch
        self.seen.setdefault(self.current_epoch, []).extend(index.tolist())
        return nn.functional.cross_entropy(self.net(x.flatten(1)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path, max_epochs: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        **kwargs,
    )


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader`")
def test_resumed_run_sees_the_uninterrupted_order(tmp_path) -> None:
    def dm() -> DigitsDataModule:
        return DigitsDataModule(image_size=8, batch_size=128, seed=11, return_index=True)

    straight = _RecordOrder()
    _trainer(tmp_path / "a", 3, enable_checkpointing=False).fit(straight, datamodule=dm())

    first = _RecordOrder()
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _trainer(tmp_path / "b", 2, callbacks=[ckpt]).fit(first, datamodule=dm())
    resumed = _RecordOrder()
    _trainer(tmp_path / "c", 3, enable_checkpointing=False).fit(
        resumed, datamodule=dm(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")
    )

    n_train = len(dm().train_indices)
    assert sorted(straight.seen) == [0, 1, 2] and list(resumed.seen) == [2]
    assert all(sorted(order) == list(range(n_train)) for order in straight.seen.values())
    assert straight.seen[0] != straight.seen[1] != straight.seen[2]  # Lightning set the epoch
    assert first.seen[0] == straight.seen[0] and first.seen[1] == straight.seen[1]
    assert resumed.seen[2] == straight.seen[2]
