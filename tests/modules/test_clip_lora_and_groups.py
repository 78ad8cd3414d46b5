"""CLIPFineTuner per-part optimiser groups (vs a hand-written assignment and open_clip's loop)
and LoRA (init = base, trainable set, adapters-only checkpoints, resume, merged export,
explainers on the adapted model)."""

from __future__ import annotations

import dataclasses
import math

import open_clip
import pytest
import pytorch_lightning as pl
import torch
from tests._trainer import quiet_trainer
from torch import nn

from lico_lightning.explain import create_pair_explainer, list_pair_explainers
from lico_lightning.modules import CLIPFineTuner, load_open_clip_weights
from lico_lightning.modules.lora import (
    LoRALinear,
    LoRAParametrization,
    apply_lora,
    merged_state_dict,
)
from lico_lightning.text import tiny_openclip_config

CFG = tiny_openclip_config(context_length=16)
CFG["vision_cfg"].update(patch_size=8, layers=2)
LR = 1e-3


def _module(seed: int = 0, **kwargs) -> CLIPFineTuner:
    torch.manual_seed(seed)
    return CLIPFineTuner(model_cfg=CFG, **{"lr": LR, **kwargs})


def _batch(module: CLIPFineTuner, n: int = 8):
    g = torch.Generator().manual_seed(5)
    images = torch.randn(n, 3, 32, 32, generator=g)
    words = ["red", "blue", "green", "cyan", "white", "orange", "purple", "yellow"]
    return images, module.tokenize([f"a {words[i % 8]} circle" for i in range(n)])


def _trainer(tmp_path, **kwargs) -> pl.Trainer:
    return quiet_trainer(tmp_path, **{"num_sanity_val_steps": 0, "limit_val_batches": 0, **kwargs})


def _loader(module: CLIPFineTuner, steps: int = 3):
    images, tokens = _batch(module)
    data = torch.utils.data.TensorDataset(images.repeat(steps, 1, 1, 1), tokens.repeat(steps, 1))
    return torch.utils.data.DataLoader(data, batch_size=8)


def _fit(module: CLIPFineTuner, tmp_path, steps: int = 3) -> pl.Trainer:
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(module, _loader(module, steps))
    return trainer


# ----------------------------------------------------------------------------- groups
def _open_clip_loop(model: nn.Module, steps: int, warmup: int = 1) -> None:
    """open_clip_train's step, written out: its exclude rule, AdamW, warmup+cosine, clamp."""

    def exclude(n, p):
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": 0.1},
        ],
        lr=LR,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    def factor(step):  # open_clip's cosine_lr
        if step < warmup:
            return (step + 1) / warmup
        e, es = step - warmup, steps - warmup
        return 0.5 * (1 + math.cos(math.pi * e / es))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    loss_fn = open_clip.loss.ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=16)
    words = ["red", "blue", "green", "cyan", "white", "orange", "purple", "yellow"]
    tokens = tokenizer([f"a {w} circle" for w in words])
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    model.train()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(*model(images, tokens)).backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))


def test_defaults_train_bitwise_like_open_clips_loop(tmp_path) -> None:
    module = _module(warmup_steps=1)
    torch.manual_seed(0)
    reference = open_clip.CLIP(**CFG)
    _fit(module, tmp_path)
    _open_clip_loop(reference, steps=3)
    for name, value in reference.state_dict().items():
        assert torch.equal(module.model.state_dict()[name], value), name


def test_part_options_equal_to_the_global_ones_change_nothing(tmp_path) -> None:
    plain, parts = (
        _module(warmup_steps=1),
        _module(
            warmup_steps=1,
            image_lr=LR,
            text_lr=LR,
            logit_scale_lr=LR,
            image_weight_decay=0.1,
            text_weight_decay=0.1,
        ),
    )
    _fit(plain, tmp_path)
    trainer = _fit(parts, tmp_path)
    assert len(trainer.optimizers[0].param_groups) == 5
    for name, value in plain.model.state_dict().items():
        assert torch.equal(parts.model.state_dict()[name], value), name


def test_groups_match_a_hand_written_assignment(tmp_path) -> None:
    options = dict(
        image_lr=1e-4,
        text_lr=2e-4,
        logit_scale_lr=3e-4,
        image_weight_decay=0.3,
        text_weight_decay=0.4,
    )
    module = _module(weight_decay=0.1, **options)
    trainer = _trainer(tmp_path, max_steps=0)
    trainer.fit(module, _loader(module, 1))
    optimizer = trainer.optimizers[0]
    seen = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen[id(p)] = (group["name"], group["initial_lr"], group["weight_decay"])
    expected = {}
    for name, p in module.model.named_parameters():  # written out for open_clip's CLIP
        if name == "logit_scale":
            expected[name] = ("logit_scale", 3e-4, 0.0)
            continue
        image = name.startswith("visual.")
        decay = p.ndim >= 2  # this model has no 2-D norm/bias parameters
        lr, wd = (1e-4, 0.3) if image else (2e-4, 0.4)
        expected[name] = (
            f"{'image' if image else 'text'}/{'decay' if decay else 'no_decay'}",
            lr,
            wd if decay else 0.0,
        )
    assert expected["visual.conv1.weight"] == ("image/decay", 1e-4, 0.3)
    assert expected["token_embedding.weight"] == ("text/decay", 2e-4, 0.4)
    assert expected["ln_final.bias"] == ("text/no_decay", 2e-4, 0.0)
    for name, p in module.model.named_parameters():
        assert seen[id(p)] == expected[name], name


def test_a_zero_image_lr_leaves_the_image_tower_and_trains_the_text_tower(tmp_path) -> None:
    module = _module(image_lr=0.0)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    _fit(module, tmp_path)
    after = module.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("visual."))
    assert not torch.equal(after["text_projection"], before["text_projection"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lock_image=True, image_lr=1e-4), r"image part.*lock_image=True.*image_lr"),
        (dict(lock_text=True, text_weight_decay=0.0), r"text part.*lock_text=True"),
        (dict(lora_rank=2, logit_scale_lr=1e-3), r"logit_scale part.*lora_rank=2"),
        (dict(lora_rank=2, lora_towers=["image"], text_lr=1e-3), r"text part.*lora_rank"),
        (dict(image_lr=-1.0), "image_lr"),
        (dict(lora_rank=0), "lora_rank"),
        (dict(lora_rank=2, lora_towers=["audio"]), "lora_towers"),
    ],
)
def test_options_for_parts_that_do_not_train_are_rejected(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        _module(**kwargs)


def test_partially_unlocked_towers_accept_their_options() -> None:
    _module(lock_image=True, lock_image_unlocked_groups=1, image_lr=1e-4)


# ----------------------------------------------------------------------------- LoRA
def _randomise_adapters(module: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("lora_B"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def test_a_lora_layer_at_init_equals_its_base_layer() -> None:
    base = nn.Linear(6, 5)
    adapted = nn.Linear(6, 5)
    adapted.load_state_dict(base.state_dict())
    seq = nn.Sequential(adapted)
    apply_lora(seq, rank=2, alpha=4.0, targets=["0"])
    x = torch.randn(3, 6)
    assert torch.equal(seq(x), base(x))
    assert isinstance(seq[0].lora, LoRALinear) and not seq[0].lora.lora_B.any()
    attn = nn.MultiheadAttention(6, 2)
    holder = nn.Sequential(attn)
    w0 = attn.in_proj_weight.detach().clone()
    apply_lora(holder, rank=2, targets=["0"])
    lora = attn.parametrizations.in_proj_weight[0]
    assert isinstance(lora, LoRAParametrization) and torch.equal(attn.in_proj_weight, w0)
    plain, lora_model = _module(seed=0), _module(seed=0, lora_rank=4)
    images, tokens = _batch(plain, 4)
    with torch.no_grad():
        assert torch.equal(plain.model.encode_image(images), lora_model.model.encode_image(images))
        assert torch.equal(plain.model.encode_text(tokens), lora_model.model.encode_text(tokens))


def test_a_lora_linear_equals_the_merged_linear() -> None:
    """The hooked adapter's output equals a Linear holding W + (alpha / r) B A, and the merged
    state dict holds exactly that weight under the plain name."""
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(6, 5))
    w0 = seq[0].weight.detach().clone()
    apply_lora(seq, rank=3, alpha=6.0, targets=["0"])
    with torch.no_grad():
        seq[0].lora.lora_B.normal_()
    expected = w0 + 2.0 * seq[0].lora.lora_B @ seq[0].lora.lora_A
    x = torch.randn(4, 6)
    plain = nn.Linear(6, 5)
    plain.load_state_dict(merged_state_dict(seq), strict=False)
    assert set(merged_state_dict(seq)) == {"0.weight", "0.bias"}
    torch.testing.assert_close(merged_state_dict(seq)["0.weight"], expected.detach())
    torch.testing.assert_close(seq(x), x @ expected.T + seq[0].bias, atol=1e-6, rtol=0)


def test_the_lora_update_is_the_low_rank_product() -> None:
    """W + (alpha / r) B A, against a hand-computed product on a MultiheadAttention."""
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2)
    holder = nn.Sequential()
    holder.add_module("attn", attn)
    w0 = attn.in_proj_weight.detach().clone()
    apply_lora(holder, rank=3, alpha=6.0, targets=["attn"])
    lora = attn.parametrizations.in_proj_weight[0]
    with torch.no_grad():
        lora.lora_B.normal_()
    expected = w0 + 2.0 * lora.lora_B @ lora.lora_A
    torch.testing.assert_close(attn.in_proj_weight, expected, atol=1e-6, rtol=0)


def test_only_adapters_train_and_are_in_the_optimizer(tmp_path) -> None:
    module = _module(lora_rank=4, lora_towers=["image", "text"])
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".lora_A", ".lora_B")) for n in trainable)
    # 2 towers x 2 blocks x (in_proj, out_proj, c_fc, c_proj) x (A, B)
    assert len(trainable) == 2 * 2 * 4 * 2
    frozen_before = {k: v.clone() for k, v in module.model.state_dict().items() if "lora_" not in k}
    trainer = _fit(module, tmp_path)
    in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in module.model.parameters() if p.requires_grad}
    after = module.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen_before.items())
    image_only = _module(lora_rank=2, lora_towers=["image"])
    names = [n for n, p in image_only.model.named_parameters() if p.requires_grad]
    assert names and all(n.startswith("visual.") for n in names)


def test_lora_targets_that_match_nothing_list_the_candidates() -> None:
    with pytest.raises(ValueError, match=r"'mlp\.fc1'.*Candidates.*c_fc"):
        _module(lora_rank=2, lora_targets=["attn", "mlp.fc1"])


def test_merged_export_reloads_with_the_adapted_embeddings(tmp_path) -> None:
    module = _module(lora_rank=4, lora_dropout=0.1)
    _randomise_adapters(module)
    path = module.export_open_clip(tmp_path / "tiny_lora.pt")
    state = torch.load(path, weights_only=True)
    assert state.keys() == open_clip.CLIP(**CFG).state_dict().keys()
    open_clip.add_model_config(path.with_suffix(".json"))
    loaded = open_clip.create_model("tiny_lora", pretrained=str(path)).eval()
    module.eval()
    images, tokens = _batch(module, 4)
    with torch.no_grad():
        adapted_image = module.model.encode_image(images)
        assert not torch.allclose(adapted_image, _module().model.eval().encode_image(images))
        torch.testing.assert_close(loaded.encode_image(images), adapted_image, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            loaded.encode_text(tokens), module.model.encode_text(tokens), atol=1e-5, rtol=0
        )


class _Stop(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_checkpoint_holds_only_adapters_and_a_resumed_run_continues(tmp_path) -> None:
    def run(root, ckpt=None, interrupt=False, seed=0):
        pl.seed_everything(0)
        module = _module(seed=seed, lora_rank=4, warmup_steps=1, lr_schedule="constant")
        callbacks = [pl.callbacks.ModelCheckpoint(dirpath=root, save_last=True)]
        callbacks += [_Stop()] if interrupt else []
        trainer = _trainer(root, max_epochs=2, enable_checkpointing=True, callbacks=callbacks)
        trainer.fit(module, _loader(module, 2), ckpt_path=ckpt)
        return module

    straight = run(tmp_path / "a")
    first = run(tmp_path / "b", interrupt=True)
    ckpt = torch.load(tmp_path / "b" / "last.ckpt", weights_only=False)
    keys = set(ckpt["state_dict"])
    assert keys == {f"model.{n}" for n, p in first.model.named_parameters() if p.requires_grad}
    assert ckpt["lora_base_fingerprint"].dtype == torch.float64
    with pytest.raises(ValueError, match="LoRA checkpoint"):
        load_open_clip_weights(open_clip.CLIP(**CFG), tmp_path / "b" / "last.ckpt")
    resumed = run(tmp_path / "b", ckpt=str(tmp_path / "b" / "last.ckpt"))
    changed = False
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
        changed |= not torch.equal(first.model.state_dict()[name], value)
    assert changed  # the second epoch trained the adapters
    with pytest.raises(ValueError, match="frozen base"):
        run(tmp_path / "b", ckpt=str(tmp_path / "b" / "last.ckpt"), seed=1)  # another base


TINY = {
    "integrated_jacobians": {"n_steps": 2},
    "m2ib": {"layer": -1, "steps": 2, "num_copies": 2},
    "fixlip": {"budget": 256, "interactions": "cross", "grid": (2, 2)},
}


@pytest.mark.parametrize("method", list_pair_explainers())
def test_pair_explainers_explain_the_adapted_model(method) -> None:
    """Every pair explainer on the LoRA model equals it on the merged plain model."""
    module = _module(lora_rank=4)
    _randomise_adapters(module)
    merged = open_clip.CLIP(**CFG)
    merged.load_state_dict(module.plain_state_dict())
    images, _ = _batch(module, 2)
    texts = ["a red circle", "a blue square"]
    results = []
    for model in (module.model, merged):
        torch.manual_seed(0)
        results.append(
            create_pair_explainer(method, model, **TINY.get(method, {})).attribute(images, texts)
        )
    compared = 0
    for field in dataclasses.fields(results[0]):
        a, b = getattr(results[0], field.name), getattr(results[1], field.name)
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=field.name)
            compared += 1
    assert compared >= 2  # the score and at least one map


def test_grounding_monitor_runs_on_a_lora_model(tmp_path) -> None:
    from lico_lightning.callbacks import GroundingMonitor
    from lico_lightning.data import ShapesCaptionDataModule

    monitor = GroundingMonitor(
        methods=["interaction_cam"],
        metrics=["pga", "pge"],
        num_probes=4,
        every_n_train_steps=2,
        log_images=False,
    )
    data = ShapesCaptionDataModule(
        model_cfg=CFG, num_train=16, num_val=8, num_test=4, batch_size=8, seed=0
    )
    module = _module(lora_rank=4, retrieval_k=(1,))
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[monitor])
    trainer.fit(module, data)
    assert monitor.num_runs >= 1
    means = {"grounding/interaction_cam/pga", "grounding/interaction_cam/pge"}
    assert set(monitor.last_results) == means | {f"{k}_se" for k in means}
    assert all(math.isfinite(monitor.last_results[k]) for k in means)


@pytest.mark.parametrize("kwargs", [dict(grad_checkpointing=True), dict(accum_freq=2)])
def test_lora_gradients_are_unchanged_by_checkpointing_and_accumulation(kwargs) -> None:
    """The adapters get the same gradients with activation checkpointing (open_clip's,
    non-reentrant: the frozen base's inputs need no requires_grad) and with contrastive
    accumulation as in one plain backward."""
    plain, other = _module(seed=0, lora_rank=4), _module(seed=0, lora_rank=4, **kwargs)
    for module in (plain, other):
        _randomise_adapters(module)
        module.train()
    images, tokens = _batch(plain)
    plain.contrastive_loss(images, tokens).backward()
    if "accum_freq" in kwargs:
        other.accumulated_backward(images, tokens)
    else:
        other.contrastive_loss(images, tokens).backward()
    grads = {n: p.grad for n, p in plain.model.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    for name, p in other.model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads[name], atol=1e-6, rtol=1e-4, msg=name)
