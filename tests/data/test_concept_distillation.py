"""ConceptDistillationDataModule: cached and online mode end to end (the frozen tiny CLIP, the
distiller's teacher, encodes the training images every step), draw settings, resume."""

from __future__ import annotations

import open_clip
import pytest
import pytorch_lightning as pl
import torch
from tests.modules.test_surrogate_distiller import TinyCaptions

from lico_lightning.data import (
    ConceptDistillationDataModule,
    ConceptImageDataset,
    random_crop_flip,
)
from lico_lightning.modules import SurrogateDistiller
from lico_lightning.testing import reinitialize, tiny_clip

CTX = 16
CFG = {
    "embed_dim": 16,
    "vision_cfg": {"layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
    "text_cfg": {"context_length": CTX, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
WORDS = ["red", "blue", "green", "square", "circle", "star"]


class Scenes(TinyCaptions):
    """The caption-dataset surface the EXPLAIN-R data module reads (1–3 captions per image)."""

    def __init__(self, n: int, seed: int, tokenizer) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, 32, 32, generator=g)
        self.caps = []
        for i in range(n):
            k = 1 + i % 3
            self.caps.append(
                [f"a {WORDS[(i + j) % 3]} {WORDS[3 + (i * j + seed) % 3]}" for j in range(k)]
            )
        self.tokenizer = tokenizer
        self.num_images = n


class Captions(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.tokenizer = open_clip.get_tokenizer("RN50", context_length=CTX)
        self.train_dataset = self.val_dataset = None

    def setup(self, stage=None) -> None:
        self.train_dataset = Scenes(12, 0, self.tokenizer)
        self.val_dataset = Scenes(6, 1, self.tokenizer)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    clip = tiny_clip(seed=3, layers=1, context_length=CTX)
    reference = open_clip.CLIP(**CFG)
    reference.load_state_dict(clip.state_dict())  # CFG builds exactly this model
    path = tmp_path_factory.mktemp("clip") / "clip.pt"
    torch.save(clip.state_dict(), path)
    return path


def teacher(clip_path) -> dict:
    """The teacher's identity: hyperparameters of the distiller."""
    return {"clip_model_cfg": CFG, "clip_pretrained": None, "clip_checkpoint": str(clip_path)}


def data(**kwargs) -> ConceptDistillationDataModule:
    """The data module; its teacher is the trainer's distiller's (or the one in ``kwargs``)."""
    return ConceptDistillationDataModule(
        Captions(), tagger="words", lexicon=None, min_count=2, max_df=1.0, batch_size=4,
        encode_batch_size=5, device="cpu", seed=2, **kwargs,
    )  # fmt: skip


class Record(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        reinitialize(pl_module.surrogate, seed=0)  # the same start in both modes

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"].detach()))


def fit(tmp_path, dm, clip_path, epochs: int = 2):
    model = SurrogateDistiller(block_size=6, lr=0.01, **teacher(clip_path))
    record = Record()
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
        num_sanity_val_steps=0, callbacks=[record],
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return model, record, trainer


def test_online_and_cached_modes_give_the_same_losses_without_augmentation(
    tmp_path, clip_path
) -> None:
    cached_dm, online_dm = data(), data(online=True)
    cached, rec_cached, _ = fit(tmp_path / "a", cached_dm, clip_path)
    online, rec_online, trainer = fit(tmp_path / "b", online_dm, clip_path)
    assert len(rec_online.losses) == 6 and online_dm.train_data is None  # no train cache
    assert "images" in next(iter(online_dm.train_dataloader()))
    torch.testing.assert_close(
        torch.tensor(rec_online.losses), torch.tensor(rec_cached.losses), rtol=1e-5, atol=1e-6
    )
    for key, value in cached.surrogate.state_dict().items():
        torch.testing.assert_close(online.surrogate.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    # CLIP: frozen, in eval mode, never in the optimizer, never in the checkpoint
    # one teacher: the data module cached the distiller's own, built from its hyperparameters
    assert online_dm.teacher() is online.teacher()
    clip = online.teacher().module
    reference = tiny_clip(seed=3, layers=1, context_length=CTX)
    for key, value in reference.state_dict().items():
        assert torch.equal(clip.state_dict()[key], value), key
    assert not clip.training and not any(p.requires_grad for p in clip.parameters())
    trained = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert trained == {id(p) for p in online.surrogate.parameters()}
    trainer.save_checkpoint(tmp_path / "online.ckpt")
    ckpt = torch.load(tmp_path / "online.ckpt", weights_only=False)
    assert all(k.startswith(("surrogate.", "loss_fn.")) for k in ckpt["state_dict"])
    assert "ConceptDistillationDataModule" in ckpt  # the draw settings, checked on resume
    assert ckpt["hyper_parameters"]["clip_checkpoint"] == str(clip_path)
    loaded = SurrogateDistiller.load_from_checkpoint(tmp_path / "online.ckpt")
    assert loaded.teacher() is not online.teacher()  # rebuilt from the hyperparameters
    for key, value in clip.state_dict().items():
        assert torch.equal(loaded.teacher().module.state_dict()[key], value), key


def test_augmentation_changes_the_training_views_only(tmp_path, clip_path) -> None:
    dm = data(augment=True, teacher=SurrogateDistiller(**teacher(clip_path)).teacher)
    assert dm.online
    dm.setup("fit")
    train = dm.train_data_online
    first, second = train[3]["images"], train[3 + len(train)]["images"]  # epochs 0 and 1
    assert not torch.equal(first, second) and first.shape == (3, 32, 32)
    assert torch.equal(train[3]["images"], first)  # a pure function of (seed, epoch, index)
    plain = ConceptImageDataset(train.dataset, torch.zeros(12, 2), train=False, augment=True)
    assert torch.equal(plain[3 + 12]["images"], train.dataset.load_image(3))  # eval: no aug
    _, rec_aug, _ = fit(tmp_path / "c", dm, clip_path, epochs=1)
    _, rec_plain, _ = fit(tmp_path / "d", data(online=True), clip_path, epochs=1)
    assert rec_aug.losses != rec_plain.losses
    with pytest.raises(ValueError, match="online=True"):
        data(augment=True, online=False)


def test_random_crop_flip_is_a_crop_and_a_flip() -> None:
    x = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(2, 6, 6)
    outs = [random_crop_flip(x, torch.Generator().manual_seed(s), min_scale=1.0) for s in range(8)]
    assert all(torch.equal(o, x) or torch.equal(o, x.flip(-1)) for o in outs)
    assert any(torch.equal(o, x) for o in outs) and any(torch.equal(o, x.flip(-1)) for o in outs)
    crops = [random_crop_flip(x, torch.Generator().manual_seed(s), min_scale=0.5) for s in range(8)]
    assert all(c.shape == x.shape and x.min() <= c.min() and c.max() <= x.max() for c in crops)
    assert any(not torch.equal(c, x) and not torch.equal(c, x.flip(-1)) for c in crops)
    with pytest.raises(ValueError, match="min_scale"):
        random_crop_flip(x, torch.Generator(), min_scale=0.0)


def test_draw_settings_are_checked_on_resume_and_bad_options_fail_early() -> None:
    state = data(score_jitter=0.5).state_dict()
    assert state["draws"]["score_jitter"] == 0.5 and state["draws"]["seed"] == 2
    data(score_jitter=0.5).load_state_dict(state)  # same settings: silent
    with pytest.warns(UserWarning, match="will not see the same data"):
        data(score_jitter=None).load_state_dict(state)
    with pytest.raises(ValueError, match=r"`score_jitter` <= 1.0"):
        data(score_jitter=1.5)
    with pytest.raises(ValueError, match=r"`score_jitter` in \[0, 1\)"):
        data(score_jitter=1.0)
    with pytest.raises(TypeError, match="`augment` to be a bool"):
        data(augment="yes")
    with pytest.raises(ValueError, match="min_scale"):
        data(min_scale=0.0)


def test_online_augmented_run_resumes_bitwise(tmp_path, clip_path) -> None:
    from pytorch_lightning.callbacks import ModelCheckpoint

    def run(root, epochs, callbacks, ckpt_path=None):
        model = SurrogateDistiller(block_size=6, lr=0.01, **teacher(clip_path))
        pl.Trainer(
            max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
            enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
            num_sanity_val_steps=0, callbacks=callbacks,
            enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        ).fit(model, datamodule=data(augment=True), ckpt_path=ckpt_path)  # fmt: skip
        return model

    pl.seed_everything(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    full = run(tmp_path / "a", 3, [ckpt])
    pl.seed_everything(7)  # the resumed run must not depend on the fresh init or global RNG
    resumed = run(tmp_path / "b", 3, [], ckpt_path=tmp_path / "ckpt" / "epoch=0-step=3.ckpt")
    a, b = full.state_dict(), resumed.state_dict()
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
