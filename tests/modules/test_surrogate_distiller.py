"""SurrogateDistiller: trains from cached CLIP embeddings, resumes bitwise, online mode == cached."""

from __future__ import annotations

import math

import open_clip
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from lico_lightning.data import (
    CaptionEmbeddings,
    ConceptPairDataset,
    EpochKeySampler,
    encode_caption_dataset,
)
from lico_lightning.explain import OpenCLIPDualEncoder
from lico_lightning.modules import CLIPFineTuner, SurrogateDistiller
from lico_lightning.testing import tiny_clip
from lico_lightning.text import tiny_openclip_config

N, C, K = 24, 10, 8
TINY = tiny_openclip_config(context_length=16)


def cached(seed: int = 0) -> tuple[CaptionEmbeddings, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    concepts = (torch.rand(N, C, generator=g) < 0.3).float()
    mix = torch.randn(C, K, generator=g)
    image = concepts @ mix + 0.3 * torch.randn(N, K, generator=g)
    captions = image.repeat_interleave(2, 0) + 0.5 * torch.randn(2 * N, K, generator=g)
    offsets = torch.arange(0, 2 * N + 1, 2)
    return CaptionEmbeddings(image, captions, offsets), concepts.to_sparse()


class Data(pl.LightningDataModule):
    def __init__(self, score_jitter: float | None = None) -> None:
        super().__init__()
        self.score_jitter = score_jitter
        self.emb, self.scores = cached()
        self.num_concepts, self.embed_dim, self.num_train_samples = C, K, N
        self.concept_labels = [f"concept{i}" for i in range(C)]

    def train_dataloader(self):
        data = ConceptPairDataset(
            self.emb, self.scores, train=True, seed=3, score_jitter=self.score_jitter
        )
        return DataLoader(data, batch_size=8, sampler=EpochKeySampler(N, seed=1))

    def val_dataloader(self):
        return DataLoader(ConceptPairDataset(self.emb, self.scores, train=False), batch_size=8)


def trainer(tmp_path, epochs: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        **kwargs,
    )


def test_fit_infers_sizes_logs_metrics_and_visits_every_sample(tmp_path) -> None:
    model = SurrogateDistiller(block_size=10)
    t = trainer(tmp_path, 2, enable_checkpointing=False)
    t.fit(model, datamodule=Data())
    metrics = t.callback_metrics
    for key in ("train/loss", "train/kl", "train/top1_agreement", "val/kl",
                "val/faithfulness_i2t_r1", "val/faithfulness_t2i_r10", "val/performance_i2t_r5"):  # fmt: skip
        assert key in metrics and math.isfinite(float(metrics[key])), key
    assert model.hparams.num_concepts == C and model.hparams.num_samples == N
    assert bool(model.loss_fn.i2t_u.seen.all()) and bool(model.loss_fn.t2i_v.seen.all())
    keys = set(model.state_dict())
    assert all(k.startswith(("surrogate.", "loss_fn.")) for k in keys), keys
    (exp,) = model.explain(torch.eye(C)[:1], k=3)
    assert exp.labels[0] == "concept0"


def test_the_caption_draw_changes_with_the_epoch_only() -> None:
    emb, scores = cached()
    data = ConceptPairDataset(emb, scores, train=True, seed=0)
    rows = [[data.caption_row(i, e) for i in range(N)] for e in range(4)]
    assert rows[0] != rows[1] and all(2 * i <= r[i] <= 2 * i + 1 for r in rows for i in range(N))
    assert [data.caption_row(i, 1) for i in range(N)] == rows[1]
    torch.testing.assert_close(data[N + 5]["text_embeds"], emb.caption_embeds[rows[1][5]])
    assert data[N + 5]["index"] == 5
    dense = scores.to_dense()
    for i in range(N):  # sparse rows read back densely
        assert torch.equal(data.concepts(i), dense[i])


@pytest.mark.parametrize("jitter", [None, 0.8])
def test_resume_from_an_epoch_checkpoint_continues_bitwise(tmp_path, jitter) -> None:
    pl.seed_everything(0)
    full = SurrogateDistiller(block_size=10)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    trainer(tmp_path / "a", 4, callbacks=[ckpt]).fit(full, datamodule=Data(jitter))
    pl.seed_everything(123)  # a resumed run must not depend on the fresh init
    resumed = SurrogateDistiller(block_size=10)
    path = tmp_path / "ckpt" / "epoch=1-step=6.ckpt"
    trainer(tmp_path / "b", 4, enable_checkpointing=False).fit(
        resumed, datamodule=Data(jitter), ckpt_path=path
    )
    a, b = full.state_dict(), resumed.state_dict()
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    loaded = SurrogateDistiller.load_from_checkpoint(path)
    assert loaded.surrogate.num_concepts == C and loaded.loss_fn.i2t_u.seen.all()


class TinyCaptions:
    """The caption-dataset surface encode_caption_dataset reads."""

    def __init__(self, tokenizer) -> None:
        g = torch.Generator().manual_seed(5)
        self.images = torch.randn(5, 3, 16, 16, generator=g)
        self.caps = [
            ["a red square"],
            ["a blue circle", "blue circle"],
            ["a dog"],
            ["x", "y", "z"],
            ["a cat"],
        ]
        self.tokenizer = tokenizer
        self.num_images = 5

    def load_image(self, i):
        return self.images[i]

    def captions(self, i):
        return self.caps[i]

    def tokenize(self, texts):
        return self.tokenizer(list(texts)).long()


def test_online_mode_equals_cached_embeddings_and_never_trains_clip() -> None:
    # in train mode, so that the encoder must be the one to put it in eval
    clip = tiny_clip(image_size=16, layers=1, embed_dim=K, context_length=16).train()
    encoder = OpenCLIPDualEncoder(
        clip, tokenizer=open_clip.get_tokenizer("RN50", context_length=16)
    )
    data = TinyCaptions(encoder.tokenize)
    emb = encode_caption_dataset(encoder, data, batch_size=2)
    assert emb.caption_offsets.tolist() == [0, 1, 3, 4, 7, 8]
    with torch.no_grad():
        torch.testing.assert_close(emb.image_embeds, clip.encode_image(data.images))
        torch.testing.assert_close(
            emb.caption_embeds[3:7], clip.encode_text(data.tokenize(["a dog", "x", "y", "z"]))
        )
    concepts = torch.rand(5, C)
    index = torch.arange(5)
    cached_model = SurrogateDistiller(num_concepts=C, embed_dim=K, num_samples=5)
    online = SurrogateDistiller(num_concepts=C, embed_dim=K, num_samples=5, teacher=encoder)
    online.load_state_dict(cached_model.state_dict())
    assert online.teacher() is encoder
    assert online.hparams.clip_model is None  # the checkpoint names no other CLIP
    first = emb.caption_offsets[:-1]
    tokens = data.tokenize([c[0] for c in data.caps])
    out_cached, *_ = cached_model._step(
        {
            "image_embeds": emb.image_embeds,
            "text_embeds": emb.caption_embeds[first],
            "concepts": concepts,
            "index": index,
        }
    )
    out_online, *_ = online._step(
        {"images": data.images, "tokens": tokens, "concepts": concepts, "index": index}
    )
    torch.testing.assert_close(out_online.loss, out_cached.loss)
    assert not any(p.requires_grad for p in clip.parameters()) and not clip.training
    assert set(online.state_dict()) == set(cached_model.state_dict())
    assert len(list(online.parameters())) == 2  # the surrogate's W and b only


def test_bad_batches() -> None:
    model = SurrogateDistiller(num_concepts=C, embed_dim=K, num_samples=4, clip_model=None)
    x = torch.randn(4, K)
    with pytest.raises(ValueError, match="'index' entry"):
        model._step({"image_embeds": x, "text_embeds": x, "concepts": torch.rand(4, C)})
    with pytest.raises(ValueError, match=f"{C} columns"):
        model._step(
            {
                "image_embeds": x,
                "text_embeds": x,
                "concepts": torch.rand(4, C + 1),
                "index": torch.arange(4),
            }
        )
    with pytest.raises(ValueError, match="Expected a teacher: `clip_model` or `clip_model_cfg`"):
        model._step({"images": torch.randn(4, 3, 16, 16), "tokens": torch.zeros(4, 16, dtype=torch.long),
                     "concepts": torch.rand(4, C), "index": torch.arange(4)})  # fmt: skip
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        model._step(
            {
                "image_embeds": x,
                "text_embeds": x,
                "concepts": torch.rand(4, C),
                "index": torch.arange(1, 5),
            }
        )
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="`image_embeds` to be finite"):
        model._step(
            {
                "image_embeds": bad,
                "text_embeds": x,
                "concepts": torch.rand(4, C),
                "index": torch.arange(4),
            }
        )
    with pytest.raises(TypeError, match="dict batch"):
        model._step((x, x))
    with pytest.raises(ValueError, match="`num_concepts` to be given"):
        SurrogateDistiller().setup("fit")
    with pytest.raises(ValueError, match="one concept row per image"):
        ConceptPairDataset(cached()[0], torch.rand(3, C))


class LabelledPairs(torch.utils.data.Dataset):
    def __init__(self, emb, scores, labels) -> None:
        self.pairs = ConceptPairDataset(emb, scores, train=False)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i):
        return {**self.pairs[i], "label": self.labels[i]}


def test_zero_shot_accuracy_of_surrogate_and_clip(tmp_path) -> None:
    emb, scores = cached()
    classes = torch.randn(3, K)
    unit = classes / classes.norm(dim=1, keepdim=True)
    labels = (emb.image_embeds @ unit.T).argmax(1)  # CLIP's own zero-shot is right by design
    labels[:4] = (labels[:4] + 1) % 3  # ... except on 4 images
    model = SurrogateDistiller(num_concepts=C, embed_dim=K, num_samples=N, block_size=8)
    model.set_zero_shot_classifier(classes)
    loader = DataLoader(LabelledPairs(emb, scores, labels), batch_size=8)
    (metrics,) = trainer(tmp_path, 1, enable_checkpointing=False).validate(model, loader)
    assert metrics["val/zeroshot_acc_clip"] == pytest.approx(20 / 24)
    with torch.no_grad():
        pred = (model.surrogate(scores.to_dense()) @ unit.T).argmax(1)  # argmax of the cosine
    assert metrics["val/zeroshot_acc_surrogate"] == pytest.approx(
        (pred == labels).float().mean().item()
    )
    assert not any(k.startswith("zero_shot") for k in model.state_dict())


class StepWatch(pl.Callback):
    """Records the smallest concept weight after every optimizer step."""

    def __init__(self) -> None:
        self.minima: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.minima.append(float(pl_module.surrogate.concept_weight.detach().min()))


def test_nonnegative_distiller_keeps_weights_nonnegative_after_every_step(tmp_path) -> None:
    pl.seed_everything(0)
    watch, free_watch = StepWatch(), StepWatch()
    model = SurrogateDistiller(nonnegative=True, block_size=10, lr=0.05)
    t = trainer(tmp_path / "a", 2, callbacks=[watch, ModelCheckpoint(dirpath=tmp_path / "c")])
    t.fit(model, datamodule=Data())
    free = SurrogateDistiller(block_size=10, lr=0.05)
    trainer(tmp_path / "b", 1, callbacks=[free_watch], enable_checkpointing=False).fit(
        free, datamodule=Data()
    )
    assert len(watch.minima) == 6 and min(watch.minima) >= 0.0
    assert min(free_watch.minima) < 0.0  # without the projection the steps go negative
    assert float(model.surrogate.concept_weight.eq(0).float().mean()) > 0.0
    path = next((tmp_path / "c").glob("*.ckpt"))
    loaded = SurrogateDistiller.load_from_checkpoint(path)
    assert loaded.hparams.nonnegative and loaded.surrogate.nonnegative
    assert torch.equal(loaded.surrogate.concept_weight, model.surrogate.concept_weight)
    concepts = Data().scores.to_dense()[:6]
    exps = loaded.explain(concepts, k=C)
    weights, bias_share = loaded.surrogate.contributions(concepts)
    torch.testing.assert_close(weights.sum(1) + bias_share, torch.ones(6))
    for exp, row, b in zip(exps, weights, bias_share):
        # all non-zero terms are listed: their weights and the bias share add up to 1
        assert len(exp.labels) == int((row != 0).sum())
        assert abs(sum(exp.weights) + exp.bias_weight - 1.0) < 1e-5 and exp.bias_weight == float(b)


# ------------------------------------------------------------------ the teacher
def test_the_teacher_is_built_from_hyperparameters_and_never_saved(tmp_path) -> None:
    torch.manual_seed(1)
    tuner = CLIPFineTuner(model_cfg=TINY)
    tuner.export_open_clip(tmp_path / "export.pt")
    model = SurrogateDistiller(
        num_concepts=C, embed_dim=TINY["embed_dim"], num_samples=4,
        clip_model_cfg=TINY, clip_pretrained=None, clip_checkpoint=str(tmp_path / "export.pt"),
    )  # fmt: skip
    teacher = model.teacher()
    assert model.teacher() is teacher  # built once
    for key, value in tuner.model.state_dict().items():
        assert torch.equal(teacher.module.state_dict()[key], value), key
    assert not teacher.module.training
    assert not any(p.requires_grad for p in teacher.module.parameters())
    assert set(model.state_dict()) == set(
        SurrogateDistiller(num_concepts=C, embed_dim=TINY["embed_dim"], num_samples=4).state_dict()
    )  # nothing of CLIP in the checkpoint: the hyperparameters rebuild it
    assert "teacher" not in model.hparams
    with pytest.raises(TypeError, match="`teacher` to be a DualEncoder"):
        SurrogateDistiller(teacher=tuner.model)
    with pytest.raises(TypeError, match="`clip_model_cfg` to be a dict"):
        SurrogateDistiller(clip_model_cfg="ViT-B-32")
