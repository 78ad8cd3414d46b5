"""LICOClassifier: loss wiring, CE baseline, export, optimizer groups, schedule, errors, resume."""

from __future__ import annotations

import math
import warnings

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from tests._trainer import quiet_trainer

from lico_lightning.data import DigitsDataModule
from lico_lightning.functional import manifold_matching_loss, sinkhorn_ot_loss
from lico_lightning.modules import LICOClassifier, lico_cosine_lambda
from lico_lightning.text import tiny_openclip_config

CLASSES = ["zero", "one", "two", "three"]
TINY = dict(
    backbone="wrn28_2",
    backbone_kwargs={"depth": 10},
    image_size=16,
    text_encoder="openclip",
    text_encoder_kwargs={"model_cfg": tiny_openclip_config()},
    n_ctx=4,
    mapping_hidden_dim=16,
)


def tiny_model(class_names=CLASSES, **overrides) -> LICOClassifier:
    return LICOClassifier(class_names, **{**TINY, **overrides})


def tiny_trainer(tmp_path, **kwargs) -> pl.Trainer:
    return quiet_trainer(
        tmp_path, **{"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 1, **kwargs}
    )


def test_loss_is_ce_plus_weighted_mm_and_ot_from_feature_maps_and_prompt_tokens() -> None:
    """Independent re-assembly of eq. 8 from the functional losses (eval: no shuffle, no dropout)."""
    model = tiny_model(alpha=3.0, beta=0.5).eval()
    x, y = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 1, 0])
    out = model.lico_losses(x, y)

    fmap = model.backbone.forward_features(x)
    feats = fmap.flatten(2)
    assert feats.shape == (6, model.backbone.feature_channels, 16)  # (B, N, H·W), 4×4 map
    g = model.mapping(model.prompt_learner(y))
    assert g.shape == (6, 5, 16)  # (B, M = n_ctx + 1, H·W)
    mm_cfg = model.mm_loss
    mm = manifold_matching_loss(
        feats,
        g,
        mm_cfg.temperature,
        distance="euclidean",
        normalize=mm_cfg.normalize,
        exclude_diagonal=mm_cfg.exclude_diagonal,
    )
    ot = sinkhorn_ot_loss(feats, g, epsilon=0.1, max_iter=100)
    ce = F.cross_entropy(model.backbone.forward_head(fmap), y)
    torch.testing.assert_close(out["ce"], ce)
    torch.testing.assert_close(out["mm"], mm)
    torch.testing.assert_close(out["ot"], ot)
    torch.testing.assert_close(out["loss"], ce + 3.0 * mm + 0.5 * ot)
    assert mm > 0 and ot > 0


def test_gradients_reach_backbone_prompts_mapping_and_temperature_but_not_text_encoder() -> None:
    model = tiny_model(mm_kwargs={"learn_temperature": True}).train()
    x, y = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 1, 0])
    model.lico_losses(x, y)["loss"].backward()
    assert (
        model.prompt_learner.ctx.grad is not None and model.prompt_learner.ctx.grad.abs().sum() > 0
    )
    assert all(p.grad is not None for p in model.mapping.parameters())
    assert model.mm_loss.log_temperature.grad is not None
    assert model.backbone.forward_head is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    encoder = model.prompt_learner.text_encoder
    assert all(p.grad is None and not p.requires_grad for p in encoder.parameters())
    assert not encoder.training  # stays in eval even though the module is in train mode


def test_ce_baseline_builds_no_text_side() -> None:
    model = LICOClassifier(
        CLASSES, backbone="wrn28_2", backbone_kwargs={"depth": 10}, alpha=0, beta=0
    )
    assert model.prompt_learner is None and model.mapping is None and model.mm_loss is None
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    out = model.lico_losses(x, y)
    torch.testing.assert_close(out["loss"], F.cross_entropy(model.backbone(x), y))
    assert out["mm"] == 0 and out["ot"] == 0


def test_export_classifier_is_a_plain_copy_of_the_backbone() -> None:
    model = tiny_model().eval()
    exported = model.export_classifier()
    names = {type(m).__name__ for m in exported.modules()}
    assert not names & {
        "PromptLearner",
        "MappingNet",
        "OpenCLIPTextEncoder",
        "ManifoldMatchingLoss",
    }
    assert sum(p.numel() for p in exported.parameters()) == sum(
        p.numel() for p in model.backbone.parameters()
    )
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(exported(x), model(x))
    with torch.no_grad():
        next(exported.parameters()).add_(1.0)
    assert not torch.allclose(exported(x), model(x))  # a copy: the model is untouched
    assert not exported.training


def test_optimizer_groups_exclude_frozen_encoder_and_do_not_decay_temperature(tmp_path) -> None:
    dm = DigitsDataModule(image_size=16, batch_size=16, class_names=None)
    model = tiny_model(class_names=dm.class_names, mm_kwargs={"learn_temperature": True})
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model, dm)
    groups = trainer.optimizers[0].param_groups
    in_opt = {id(p) for g in groups for p in g["params"]}
    encoder = model.prompt_learner.text_encoder
    assert not any(id(p) in in_opt for p in encoder.parameters())
    assert id(model.prompt_learner.ctx) in in_opt
    assert all(id(p) in in_opt for p in model.mapping.parameters())
    assert all(id(p) in in_opt for p in model.backbone.parameters())
    no_decay = [g for g in groups if g["weight_decay"] == 0.0]
    assert len(no_decay) == 1 and no_decay[0]["params"] == [model.mm_loss.log_temperature]
    assert groups[0]["weight_decay"] == 1e-4 and groups[0]["momentum"] == 0.9
    assert trainer.lr_scheduler_configs[0].interval == "step"


def test_cosine_7_16_schedule_matches_the_paper_formula_during_training(tmp_path) -> None:
    seen: list[float] = []

    class RecordLR(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    dm = DigitsDataModule(image_size=16, batch_size=32)
    model = tiny_model(class_names=dm.class_names, lr=0.05)
    trainer = tiny_trainer(tmp_path, max_epochs=2, limit_train_batches=4, callbacks=[RecordLR()])
    trainer.fit(model, dm)
    total = 8
    expected = [0.05 * math.cos(7 * math.pi * k / (16 * total)) for k in range(total)]
    assert seen == pytest.approx(expected, rel=1e-6)
    assert lico_cosine_lambda(total)(total) == pytest.approx(math.cos(7 * math.pi / 16))


def test_fit_logs_every_term_and_accuracy(tmp_path) -> None:
    dm = DigitsDataModule(image_size=16, batch_size=16)
    model = tiny_model(class_names=dm.class_names)
    trainer = tiny_trainer(tmp_path, limit_val_batches=2)
    trainer.fit(model, dm)
    logged = trainer.callback_metrics
    for key in ("train/loss", "train/ce", "train/mm", "train/ot", "val/acc", "val/acc_top5"):
        assert key in logged and torch.isfinite(logged[key])
    assert 0 <= logged["val/acc"] <= logged["val/acc_top5"] <= 1


def test_bf16_autocast_gives_finite_loss_and_gradients() -> None:
    model = tiny_model().train()
    x, y = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 1, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.lico_losses(x, y)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_batch_of_one_trains_with_ce_only_and_warns_once() -> None:
    model = tiny_model().train()
    with pytest.warns(UserWarning, match="at least 2 samples"):
        out = model.lico_losses(torch.randn(1, 3, 16, 16), torch.tensor([2]))
    assert out["mm"] == 0 and out["ot"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.lico_losses(torch.randn(1, 3, 16, 16), torch.tensor([2]))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"class_names": []}, ValueError, "non-empty list of strings"),
        ({"backbone": "resnet1000"}, ValueError, "wrn28_2"),
        ({"text_encoder": "word2vec"}, ValueError, "minilm"),
        ({"lr_schedule": "step"}, ValueError, "cosine_7_16"),
        ({"alpha": -1.0}, ValueError, "alpha"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"class_names": ["a", "a"]}, ValueError, "distinct"),
    ],
)
def test_bad_configuration_is_rejected(kwargs, error, match) -> None:
    names = kwargs.pop("class_names", CLASSES)
    with pytest.raises(error, match=match):
        tiny_model(class_names=names, **kwargs)


def test_bad_batches_are_rejected_before_work() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="non-empty image batch"):
        model.lico_losses(torch.randn(0, 3, 16, 16), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="long targets of shape"):
        model.lico_losses(torch.randn(2, 3, 16, 16), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="image_size"):
        model.lico_losses(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"targets in \[0, 4\).*\[7\]"):
        model.lico_losses(torch.randn(2, 3, 16, 16), torch.tensor([0, 7]))
    x = torch.randn(2, 3, 16, 16)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises((ValueError, FloatingPointError), match="finite"):
        model.training_step((x, torch.tensor([0, 1])), 0)


class _StopAfterFirstEpoch(Callback):
    """Simulates an interrupted run: stop after epoch 0 (its checkpoint is written)."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _resume_setup(seed: int):
    """Same configuration (data split/order seed 0), different global seed."""
    pl.seed_everything(seed)
    dm = DigitsDataModule(image_size=16, batch_size=16, augment=True, seed=0)
    model = tiny_model(class_names=dm.class_names, mapping_dropout=0.5)
    return dm, model


@pytest.mark.slow
def test_resumed_run_continues_exactly(tmp_path) -> None:
    """2 epochs straight == 1 epoch + resume from its checkpoint + 1 epoch (bitwise)."""
    common = dict(max_epochs=2, limit_train_batches=4, limit_val_batches=1)

    dm, straight = _resume_setup(0)
    tiny_trainer(tmp_path / "a", **common).fit(straight, dm)

    dm, first = _resume_setup(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    tiny_trainer(
        tmp_path / "b",
        enable_checkpointing=True,
        callbacks=[_StopAfterFirstEpoch(), ckpt],
        **common,
    ).fit(first, dm)
    assert first.current_epoch == 1 and first.global_step == 4

    dm, resumed = _resume_setup(123)  # different seed: everything must come from the checkpoint
    tiny_trainer(tmp_path / "c", **common).fit(resumed, dm, ckpt_path=ckpt.last_model_path)

    assert resumed.global_step == straight.global_step == 8
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert _same(a[key], b[key]), key
    # and the run really depended on the resumed RNG: an unrestored resume differs
    dm, unrestored = _resume_setup(0)
    unrestored.hparams.resume_rng_state = False
    ckpt2 = ModelCheckpoint(dirpath=tmp_path / "ckpt2", save_last=True)
    tiny_trainer(
        tmp_path / "d",
        enable_checkpointing=True,
        callbacks=[_StopAfterFirstEpoch(), ckpt2],
        **common,
    ).fit(unrestored, dm)
    dm, other = _resume_setup(123)
    tiny_trainer(tmp_path / "e", **common).fit(other, dm, ckpt_path=ckpt2.last_model_path)
    assert not all(_same(a[k], other.state_dict()[k]) for k in a)


# ------------------------------------------------------------------ hardening (issue 11)
def test_checkpoint_leaves_out_the_frozen_text_encoder_and_loads_back(tmp_path) -> None:
    dm = DigitsDataModule(image_size=16, batch_size=16)
    model = tiny_model(class_names=dm.class_names)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = tiny_trainer(tmp_path, enable_checkpointing=True, callbacks=[ckpt])
    trainer.fit(model, dm)
    saved = torch.load(ckpt.last_model_path, weights_only=True)
    encoder_keys = [k for k in saved["state_dict"] if k.startswith("prompt_learner.text_encoder.")]
    assert encoder_keys == []
    encoder_numel = sum(p.numel() for p in model.text_encoder.parameters())
    stored_numel = sum(t.numel() for t in saved["state_dict"].values() if torch.is_tensor(t))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert stored_numel < trainable * 1.1 < encoder_numel + trainable  # backbone, prompts, h_psi
    loaded = LICOClassifier.load_from_checkpoint(ckpt.last_model_path)
    full_a, full_b = model.state_dict(), loaded.state_dict()
    assert full_a.keys() == full_b.keys()
    assert all(_same(full_a[k], full_b[k]) for k in full_a)
    enc_a, enc_b = model.text_encoder.state_dict(), loaded.text_encoder.state_dict()
    assert all(torch.equal(enc_a[k], enc_b[k]) for k in enc_a)  # rebuilt, identical
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    model.eval(), loaded.eval()
    torch.testing.assert_close(model.lico_losses(x, y)["mm"], loaded.lico_losses(x, y)["mm"])
    # an encoder that cannot be rebuilt identically is refused, not silently swapped
    saved["lico_text_encoder_fingerprint"] = saved["lico_text_encoder_fingerprint"] + 1.0
    torch.save(saved, tmp_path / "tampered.ckpt")
    with pytest.raises(ValueError, match="rebuilt from the checkpoint's hyperparameters"):
        LICOClassifier.load_from_checkpoint(tmp_path / "tampered.ckpt")


def test_extending_a_finished_run_keeps_the_schedule_and_warns(tmp_path) -> None:
    seen: list[float] = []

    class RecordLR(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    dm = DigitsDataModule(image_size=16, batch_size=32)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = tiny_model(class_names=dm.class_names, lr=0.05)
    tiny_trainer(
        tmp_path / "a", enable_checkpointing=True, callbacks=[ckpt], limit_train_batches=4
    ).fit(first, dm)
    seen.clear()
    resumed = tiny_model(class_names=dm.class_names, lr=0.05)
    trainer = tiny_trainer(
        tmp_path / "b", max_epochs=2, limit_train_batches=4, callbacks=[RecordLR()]
    )
    with pytest.warns(UserWarning, match=r"planned for K=4 steps.*give K=8"):
        trainer.fit(resumed, dm, ckpt_path=ckpt.last_model_path)
    expected = [0.05 * math.cos(7 * math.pi * min(k, 4) / (16 * 4)) for k in range(4, 8)]
    assert seen == pytest.approx(expected, rel=1e-6)


def test_mid_epoch_resume_replays_the_epoch_as_documented(tmp_path) -> None:
    """Documented limit: a mid-epoch checkpoint restarts its epoch's data from the first batch."""
    order: list[list[int]] = []

    class RecordTargets(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            order.append(batch[1].tolist())

    dm = DigitsDataModule(image_size=16, batch_size=16)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    model = tiny_model(class_names=dm.class_names, lr_schedule="constant")
    tiny_trainer(
        tmp_path / "a",
        enable_checkpointing=True,
        callbacks=[ckpt, RecordTargets()],
        limit_train_batches=4,
        limit_val_batches=0,
    ).fit(model, dm)
    epoch = list(order)
    order.clear()
    mid = next(p for p in (tmp_path / "ckpt").iterdir() if "step=2" in p.name)
    with pytest.warns(UserWarning, match="not resumable|resumable"):
        tiny_trainer(
            tmp_path / "b",
            callbacks=[RecordTargets()],
            limit_train_batches=4,
            limit_val_batches=0,
        ).fit(tiny_model(class_names=dm.class_names, lr_schedule="constant"), dm, ckpt_path=mid)
    assert order and order[0] == epoch[0]  # replayed from the first batch, not batch 2


def test_list_targets_and_wrong_channel_count_are_clear_errors() -> None:
    model = tiny_model()
    with pytest.raises(TypeError, match=r"`targets` to be a torch\.Tensor, but got list"):
        model.lico_losses(torch.randn(3, 3, 16, 16), [0, 1, 2])
    with pytest.raises(ValueError, match=r"3 channels .*in_channels=3.*but got 1.*channels: 3"):
        model.lico_losses(torch.randn(2, 1, 16, 16), torch.tensor([0, 1]))
    grey = tiny_model(backbone_kwargs={"depth": 10, "in_channels": 1})
    assert grey.lico_losses(torch.randn(2, 1, 16, 16), torch.tensor([0, 1]))["loss"].isfinite()


def test_mm_temperature_is_fixed_by_default_and_learnable_on_request(tmp_path) -> None:
    model = tiny_model()
    assert not model.mm_loss.learn_temperature
    assert "mm_loss.log_temperature" not in dict(model.named_parameters())
    learned = tiny_model(mm_kwargs={"learn_temperature": True})
    assert "mm_loss.log_temperature" in dict(learned.named_parameters())
    dm = DigitsDataModule(image_size=16, batch_size=16)
    model = tiny_model(class_names=dm.class_names)
    tiny_trainer(tmp_path, limit_train_batches=2, limit_val_batches=0).fit(model, dm)
    assert float(model.trainer.callback_metrics["train/mm_temperature"]) == pytest.approx(0.07)


@pytest.mark.slow
@pytest.mark.distributed
def test_lico_digits_trains_under_two_process_ddp_spawn(tmp_path) -> None:
    """Every rank used to die unpickling its arguments: the prompt learner's torch.Generator
    went through torch.multiprocessing's shared-memory file-descriptor path."""
    dm = DigitsDataModule(image_size=16, batch_size=16)
    model = tiny_model(class_names=dm.class_names)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainer = tiny_trainer(
        tmp_path, devices=2, strategy="ddp_spawn", limit_train_batches=2, limit_val_batches=1
    )
    trainer.fit(model, dm)  # 2 spawned ranks (~60 s on 2 busy cores: process start-up)
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/mm", "train/ot", "val/acc"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    after = model.backbone.state_dict()  # rank 0's trained weights come back to this process
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_misspelt_mm_option_lists_the_options() -> None:
    with pytest.raises(
        ValueError, match=r"`mm_kwargs` keys among \[.*'temperature'.*\].*'temprature'"
    ):
        tiny_model(mm_kwargs={"temprature": 0.1})


@pytest.mark.parametrize("name", ["lr", "alpha", "beta", "weight_decay"])
def test_infinite_hyperparameters_are_rejected(name):
    with pytest.raises(ValueError, match=rf"`{name}` .*finite, but got inf"):
        LICOClassifier(
            ["a", "b"], backbone="wrn28_2", text_encoder="minilm", **{name: float("inf")}
        )
