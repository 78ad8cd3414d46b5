"""CLIPFineTuner: loss vs naive formulas and open_clip, 2-process gradients, resume, eval, export."""

from __future__ import annotations

import math

import open_clip
import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from tests._ddp import run_in_gloo_group
from tests._trainer import quiet_trainer
from torch import nn
from torch.nn import functional as F

from lico_lightning.data import DigitsDataModule, ShapesCaptionDataModule
from lico_lightning.modules import CLIPFineTuner
from lico_lightning.modules.clip_finetuner import (
    clip_param_groups,
    unpadded_order,
    warmup_cosine_lambda,
)
from lico_lightning.text import tiny_openclip_config

CFG = tiny_openclip_config(context_length=16)


def _module(seed: int = 0, **kwargs) -> CLIPFineTuner:
    torch.manual_seed(seed)
    return CLIPFineTuner(model_cfg=CFG, **{"lr": 1e-3, **kwargs})


def _data(**kwargs) -> ShapesCaptionDataModule:
    kw = {"num_train": 32, "num_val": 12, "num_test": 12, "batch_size": 16, **kwargs}
    return ShapesCaptionDataModule(model_cfg=CFG, **kw)


def _trainer(tmp_path=None, **kwargs) -> pl.Trainer:
    return quiet_trainer(tmp_path, **{"num_sanity_val_steps": 0, **kwargs})


def _naive_clip_loss(u: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Symmetric InfoNCE written out with explicit log-sum-exp per row."""
    logits = scale * u @ v.T
    n = logits.shape[0]
    i2t = sum(-(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in range(n)) / n
    t2i = sum(-(logits[i, i] - torch.logsumexp(logits[:, i], 0)) for i in range(n)) / n
    return (i2t + t2i) / 2


def _features(n: int = 6, k: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(n, k, generator=g), dim=-1)
    v = F.normalize(torch.randn(n, k, generator=g), dim=-1)
    return u, v


def test_clip_loss_equals_naive_and_open_clip() -> None:
    u, v = _features()
    module = _module()
    scale = torch.tensor(12.5)
    ours = module.loss_fn(u, v, scale)
    assert float(ours) == pytest.approx(float(_naive_clip_loss(u, v, 12.5)), abs=1e-5)
    assert float(ours) == pytest.approx(float(open_clip.loss.ClipLoss()(u, v, scale)), abs=1e-6)
    # the module's own forward: same as the naive loss on the model's normalised embeddings
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = module.tokenize(["a red circle", "a blue square", "a cat", "two dogs"])
    with torch.no_grad():
        ui = module.model.encode_image(images, normalize=True)
        vt = module.model.encode_text(tokens, normalize=True)
        ref = _naive_clip_loss(ui, vt, float(module.model.logit_scale.exp()))
        assert float(module.contrastive_loss(images, tokens)) == pytest.approx(float(ref), abs=1e-5)


def test_siglip_loss_equals_naive() -> None:
    cfg = {**CFG, "init_logit_bias": -10.0}
    torch.manual_seed(0)
    module = CLIPFineTuner(model_cfg=cfg, loss="siglip")
    u, v = _features()
    scale, bias = torch.tensor(10.0), torch.tensor(-3.0)
    labels = 2 * torch.eye(6) - 1
    naive = -F.logsigmoid(labels * (scale * u @ v.T + bias)).sum() / 6
    assert float(module.loss_fn(u, v, scale, bias)) == pytest.approx(float(naive), abs=1e-5)


def _reference(module: CLIPFineTuner) -> tuple[float, dict[str, torch.Tensor]]:
    """One process, the global batch of 8 (no collectives: world size 1)."""
    module.configure_loss(0, 1)
    loss = module.contrastive_loss(*_global_batch(module))
    grads = torch.autograd.grad(loss, list(module.model.parameters()))
    return float(loss), dict(zip([n for n, _ in module.model.named_parameters()], grads))


def _ddp_grads(rank: int, world_size: int) -> tuple[float, float, dict[str, float]]:
    """This rank's half of the global batch with negatives gathered from the other rank; the
    DDP average of loss and gradients compared in the worker with the one-process reference
    (only floats travel back: big tensors would block the result queue)."""
    module = _module(seed=0)
    ref_loss, ref_grads = _reference(_module(seed=0))
    module.configure_loss(rank, world_size)
    images, tokens = _global_batch(module)
    half = slice(rank * 4, (rank + 1) * 4)
    loss = module.contrastive_loss(images[half], tokens[half])
    loss.backward()
    diffs = {}
    for name, p in module.model.named_parameters():  # what DDP does: average over ranks
        dist.all_reduce(p.grad)
        grad = p.grad / world_size
        diffs[name] = float(
            (grad - ref_grads[name]).abs().max() / ref_grads[name].abs().max().clamp_min(1e-12)
        )
    total = loss.detach().clone()
    dist.all_reduce(total)
    return float(total) / world_size, ref_loss, diffs


def _global_batch(module: CLIPFineTuner):
    g = torch.Generator().manual_seed(5)
    images = torch.randn(8, 3, 32, 32, generator=g)
    words = ["red", "blue", "green", "cyan", "white", "orange", "purple", "yellow"]
    return images, module.tokenize([f"a {w} circle" for w in words])


@pytest.mark.distributed
def test_two_process_loss_and_gradients_equal_one_process_on_global_batch() -> None:
    results = run_in_gloo_group(_ddp_grads)
    for ddp_loss, ref_loss, diffs in results:
        assert ddp_loss == pytest.approx(ref_loss, abs=1e-5)
        assert len(diffs) == len(list(_module().model.parameters()))
        worst = max(diffs, key=diffs.get)
        assert diffs[worst] < 1e-4, (worst, diffs[worst])  # relative to the largest gradient entry
    # the gathered negatives matter: without them (each rank alone) the loss differs
    module = _module(seed=0)
    images, tokens = _global_batch(module)
    alone = (
        module.contrastive_loss(images[:4], tokens[:4])
        + module.contrastive_loss(images[4:], tokens[4:])
    ) / 2
    assert abs(float(alone) - results[0][1]) > 1e-3


def test_param_groups_follow_open_clip_rule_and_skip_locked() -> None:
    module = _module()
    no_decay, decay = clip_param_groups(module.model, 0.2)
    names = {id(p): n for n, p in module.model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    assert "logit_scale" in nd and "visual.class_embedding" in nd
    assert "visual.transformer.resblocks.0.ln_1.weight" in nd
    assert "visual.transformer.resblocks.0.attn.in_proj_bias" in nd
    assert "positional_embedding" in d and "visual.conv1.weight" in d and "text_projection" in d
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.2
    assert nd | d == set(names.values())
    locked = _module(lock_image=True)
    _, decay = clip_param_groups(locked.model, 0.2)
    assert not any(
        n.startswith("visual.") for n, p in locked.model.named_parameters() if p.requires_grad
    )
    assert decay["params"]


def test_optimizer_schedule_and_logit_scale_clamp(tmp_path) -> None:
    module = _module(lr=2e-3, warmup_steps=2, weight_decay=0.05)
    with torch.no_grad():
        module.model.logit_scale.fill_(5.0)  # above ln(100)
    seen = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            seen.append(
                (trainer.optimizers[0].param_groups[0]["lr"], float(pl_module.model.logit_scale))
            )

    trainer = _trainer(tmp_path, max_steps=4, limit_val_batches=0, callbacks=[Record()])
    trainer.fit(module, _data(num_train=32, batch_size=8))
    opt = trainer.optimizers[0]
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.05]
    total = trainer.estimated_stepping_batches
    f = warmup_cosine_lambda(2, total)
    # lr seen after step t has been stepped by the scheduler to factor(t + 1)
    assert [lr for lr, _ in seen] == pytest.approx([2e-3 * f(t + 1) for t in range(4)])
    assert f(0) == 0.5 and f(1) == 1.0 and f(2 + (total - 2) // 2) == pytest.approx(0.5, abs=0.2)
    assert all(scale <= math.log(100) + 1e-7 for _, scale in seen)


class _StopAfterFirstEpoch(pl.Callback):
    """Interrupt a 2-epoch run after its first epoch (same schedule length as the full run)."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_resume_equals_uninterrupted(tmp_path) -> None:
    def run(root, ckpt=None, interrupt=False):
        pl.seed_everything(0)
        module = _module(seed=0, warmup_steps=1)
        callbacks = [pl.callbacks.ModelCheckpoint(dirpath=root, save_last=True)]
        callbacks += [_StopAfterFirstEpoch()] if interrupt else []
        trainer = _trainer(
            root, max_epochs=2, enable_checkpointing=True, callbacks=callbacks, limit_val_batches=1
        )
        trainer.fit(module, _data(), ckpt_path=ckpt)
        return module, trainer

    straight, _ = run(tmp_path / "a")
    first, trainer = run(tmp_path / "b", interrupt=True)
    assert trainer.current_epoch == 1 and trainer.global_step == 4  # one epoch of 64 pairs / 16
    resumed, _ = run(tmp_path / "b", ckpt=str(tmp_path / "b" / "last.ckpt"))
    changed = False
    for (name, a), b, c in zip(
        straight.model.state_dict().items(),
        resumed.model.state_dict().values(),
        first.model.state_dict().values(),
    ):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
        changed |= not torch.equal(a, c)
    assert changed  # the second epoch did train
    assert float(straight.model.logit_scale) == float(resumed.model.logit_scale)


def _naive_recall(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> float:
    hits = 0
    for s, r in zip(scores.tolist(), relevant.tolist()):
        order = sorted(range(len(s)), key=lambda j: (-s[j], r[j]))
        hits += any(r[j] for j in order[:k])
    return hits / len(scores)


@pytest.mark.parametrize("ks", [(1, 5), (1,)])  # one cut-off: torchmetrics squeezes compute()
def test_validation_retrieval_equals_naive_loop_over_split(tmp_path, ks) -> None:
    module = _module(retrieval_k=ks)
    dm = _data(batch_size=5)  # batches cut through an image's two captions
    metrics = _trainer(tmp_path).validate(module, dm, verbose=False)[0]
    ds = dm.val_dataset
    with torch.no_grad():
        images = torch.stack([ds.load_image(i) for i in range(ds.num_images)])
        caps = [(i, c) for i in range(ds.num_images) for c in ds.captions(i)]
        u = module.model.encode_image(images, normalize=True)
        v = module.model.encode_text(ds.tokenize([c for _, c in caps]), normalize=True)
    owner = torch.tensor([i for i, _ in caps])
    relevant = torch.arange(ds.num_images)[:, None] == owner[None, :]
    for k in ks:
        assert metrics[f"val/i2t_R@{k}"] == pytest.approx(
            _naive_recall(u @ v.T, relevant, k), abs=1e-6
        )
        assert metrics[f"val/t2i_R@{k}"] == pytest.approx(
            _naive_recall(v @ u.T, relevant.T, k), abs=1e-6
        )
    assert "val/loss" in metrics and "val/R@1" in metrics


def test_eval_keeps_captions_that_tokenise_alike() -> None:
    """One process pads nothing: two captions of one image with equal tokens ("A red circle",
    "a red circle") are two text->image queries (they were merged as sampler padding)."""
    module = _module()
    feats = torch.randn(5, 4)
    tokens = torch.arange(15).view(5, 3)
    tokens[1] = tokens[0]
    index = torch.tensor([0, 0, 1, 2, 2])
    module._eval = {
        "image": [feats[:3], feats[3:]],
        "text": [feats[:3] + 1, feats[3:] + 1],
        "index": [index[:3], index[3:]],
        "tokens": [tokens[:3], tokens[3:]],
    }
    image, _, idx, tok = module._gathered("val")
    torch.testing.assert_close(image, feats)
    torch.testing.assert_close(tok, tokens)
    assert idx.tolist() == index.tolist()


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("length", [1, 5, 6, 7, 12])
def test_unpadded_order_inverts_the_distributed_sampler(world_size, length) -> None:
    from torch.utils.data import DistributedSampler

    per_rank = [
        list(DistributedSampler(range(length), world_size, r, shuffle=False))
        for r in range(world_size)
    ]
    gathered = torch.tensor([i for rank in per_rank for i in rank])  # rank-major, as all_gather
    keep = unpadded_order(len(per_rank[0]), world_size, length)
    assert gathered[keep].tolist() == list(range(length))


def test_zeroshot_accuracy_equals_naive(tmp_path) -> None:
    digits = DigitsDataModule(image_size=32, batch_size=64)
    module = _module(zeroshot_templates=("a photo of the digit {}.",))
    dm = _data(zeroshot=digits)
    metrics = _trainer(tmp_path, limit_val_batches=2).validate(module, dm, verbose=False)
    merged = {k: v for m in metrics for k, v in m.items()}
    digits.setup("validate")
    images, targets = zip(*(digits.val_dataset[i] for i in range(128)))
    with torch.no_grad():
        text = module.model.encode_text(
            module.tokenize([f"a photo of the digit {c}." for c in digits.class_names]),
            normalize=True,
        )
        pred = (module.model.encode_image(torch.stack(images), normalize=True) @ text.T).argmax(1)
    naive = (pred == torch.tensor(targets)).float().mean()
    assert merged["val/zeroshot_acc"] == pytest.approx(float(naive), abs=1e-6)


def test_export_loads_in_open_clip_and_wise_ft(tmp_path) -> None:
    initial = _module(seed=1)
    init_path = initial.export_open_clip(tmp_path / "tiny_init.pt")
    module = CLIPFineTuner(model_cfg=CFG, pretrained=str(init_path))
    torch.testing.assert_close(module.model.state_dict(), initial.model.state_dict())
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(0.1)
    path = module.export_open_clip(tmp_path / "tiny_ft.pt")
    open_clip.add_model_config(path.with_suffix(".json"))
    loaded = open_clip.create_model("tiny_ft", pretrained=str(path))
    tokens = module.tokenize(["a red circle"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tokens), module.model.encode_text(tokens))
    half = module.wise_ft_state_dict(0.5)
    for name, value in module.model.state_dict().items():
        expected = (
            (value + initial.model.state_dict()[name]) / 2 if value.is_floating_point() else value
        )
        torch.testing.assert_close(half[name], expected, msg=name)
    torch.testing.assert_close(module.wise_ft_state_dict(0.0), initial.model.state_dict())
    with pytest.raises(ValueError, match="pretrained"):
        _module().wise_ft_state_dict(0.5)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"contrastive loss name.*Available: clip, siglip"):
        _module(loss="infonce")
    with pytest.raises(TypeError, match="open_clip CLIP"):
        CLIPFineTuner(model=nn.Linear(2, 2))
    with pytest.raises(ValueError, match="logit_bias"):
        _module(loss="siglip")
    with pytest.raises(ValueError, match="open_clip model"):
        CLIPFineTuner(model_name="ViT-Nope")
    module = _module()
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        module.contrastive_loss(torch.zeros(2, 3, 32, 32), torch.zeros(2, 77, dtype=torch.long))


@pytest.mark.distributed
def test_two_process_validation_gathers_the_whole_split(tmp_path) -> None:
    """Each rank sees half of the split (the DistributedSampler pads an odd split with a
    repeated sample); the R@K logged under ddp_spawn must equal the one-process values."""
    results = {}
    for name, kw in {
        "single": {"devices": 1},
        "ddp": {"devices": 2, "strategy": "ddp_spawn"},
    }.items():
        module = _module(seed=0, retrieval_k=(1, 5))
        dm = _data(num_val=11, batch_size=4)  # 22 captions: uneven shards, padding to drop
        metrics = _trainer(tmp_path / name, **kw).validate(module, dm, verbose=False)[0]
        results[name] = {k: float(v) for k, v in metrics.items() if "R@" in k}
    assert set(results["single"]) == {
        "val/i2t_R@1",
        "val/i2t_R@5",
        "val/t2i_R@1",
        "val/t2i_R@5",
        "val/R@1",
    }
    assert results["ddp"] == pytest.approx(results["single"], abs=1e-6)


def _bad_batches(module: CLIPFineTuner) -> dict[str, tuple[object, object]]:
    images = torch.randn(2, 3, 32, 32)
    tokens = module.tokenize(["a cat", "a dog"])
    too_high = tokens.clone()
    too_high[0, 1] = module.model.vocab_size
    return {
        "wrong size": (torch.randn(2, 3, 24, 24), tokens),
        "uint8": ((images * 50).to(torch.uint8), tokens),
        "one channel": (images[:, :1], tokens),
        "3-D": (images[0], tokens),
        "float tokens": (images, tokens.float()),
        "token id >= vocabulary": (images, too_high),
        "negative token id": (images, tokens - 1),
        "not a tensor": (images.tolist(), tokens),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong size",
        "uint8",
        "one channel",
        "3-D",
        "float tokens",
        "token id >= vocabulary",
        "negative token id",
        "not a tensor",
    ],
)
def test_contrastive_loss_rejects_bad_batches_before_the_model_runs(case) -> None:
    module = _module()
    images, tokens = _bad_batches(module)[case]
    calls = []
    module.model.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises((ValueError, TypeError), match="Expected"):
        module.contrastive_loss(images, tokens)  # type: ignore[arg-type]
    assert calls == []


def test_scalar_retrieval_k_and_template_are_one_value() -> None:
    module = _module(retrieval_k=5, zeroshot_templates="a photo of a {}.")
    assert module.retrieval_k == (5,)
    assert tuple(module.hparams.zeroshot_templates) == ("a photo of a {}.",)
    with pytest.raises(TypeError, match="zero-shot template to be a string"):
        _module(zeroshot_templates=[3])


def test_a_nan_batch_stops_training_before_the_optimizer_step(tmp_path) -> None:
    module = _module()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 32, 32, generator=g)
    images[5, 0, 3, 3] = float("nan")  # one NaN pixel in the second batch of 4
    tokens = module.tokenize(["a red circle"] * 8)
    data = torch.utils.data.TensorDataset(images, tokens, torch.arange(8))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=0)
    with pytest.raises(FloatingPointError, match=r"samples \[4, 5, 6, 7\]"):
        trainer.fit(module, loader)
    assert trainer.global_step == 1  # the first step was taken, the NaN one not
    after = module.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # step 1 did train


# ----------------------------------------------------------------------------- accumulation
def _grads(module: CLIPFineTuner) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "accum_freq, dtype, tolerance",
    [
        (2, torch.float64, 1e-12),
        (4, torch.float64, 1e-12),
        (8, torch.float64, 1e-12),
        (4, torch.float32, 1e-5),
    ],
)
def test_accumulated_gradient_equals_the_big_batch_gradient(accum_freq, dtype, tolerance) -> None:
    """The reference is plain autograd through one forward of the whole batch of 8. In float64
    the two agree to rounding (exact method); in float32 to the summation-order noise."""
    big, accumulated = _module(seed=0).to(dtype), _module(seed=0).to(dtype)
    images, tokens = _global_batch(big)
    images = images.to(dtype)
    big_loss = big.contrastive_loss(images, tokens)
    big_loss.backward()
    loss = accumulated.accumulated_backward(images, tokens, accum_freq=accum_freq)
    assert float(loss) == pytest.approx(float(big_loss.detach()), rel=tolerance)
    ref, ours = _grads(big), _grads(accumulated)
    assert ref.keys() == ours.keys() and "logit_scale" in ours  # the scale's gradient: once
    for name in ref:
        relative = (ours[name] - ref[name]).abs().max() / ref[name].abs().max().clamp_min(1e-30)
        assert float(relative) < tolerance, name


def test_accumulation_recomputes_with_the_same_dropout_masks() -> None:
    """With patch dropout, each micro-batch's recompute draws the masks of its cached pass:
    the returned loss (that of the last recompute) equals the loss of the cached features."""
    module = _module(seed=0, patch_dropout=0.5)
    module.train()
    images, tokens = _global_batch(module)
    torch.manual_seed(11)
    loss = module.accumulated_backward(images, tokens, accum_freq=2)
    torch.manual_seed(11)
    with torch.no_grad():
        outs = [module._model_outputs(i, t) for i, t in zip(images.chunk(2), tokens.chunk(2))]
        cached = module.loss_fn(
            torch.cat([o["image_features"] for o in outs]),
            torch.cat([o["text_features"] for o in outs]),
            outs[0]["logit_scale"],
        )
    assert float(loss) == pytest.approx(float(cached), abs=1e-6)


def _ddp_accumulated_grads(rank: int, world_size: int) -> float:
    """This rank's half of the batch, negatives gathered from the other rank: accumulated over 2
    micro-batches vs one forward of the half; the largest relative gradient difference."""
    big, accumulated = _module(seed=0), _module(seed=0)
    for module in (big, accumulated):
        module.configure_loss(rank, world_size)
    images, tokens = _global_batch(big)
    half = slice(rank * 4, (rank + 1) * 4)
    big.contrastive_loss(images[half], tokens[half]).backward()
    accumulated.accumulated_backward(images[half], tokens[half], accum_freq=2)
    ref, ours = _grads(big), _grads(accumulated)
    return max(
        float((ours[n] - ref[n]).abs().max() / ref[n].abs().max().clamp_min(1e-12)) for n in ref
    )


@pytest.mark.distributed
def test_two_process_accumulated_gradients_equal_the_big_batch() -> None:
    assert all(diff < 1e-5 for diff in run_in_gloo_group(_ddp_accumulated_grads))


def test_training_with_accumulation_equals_training_the_big_batch(tmp_path) -> None:
    """Three optimizer steps (AdamW, cosine schedule, logit-scale clamp) through the Trainer:
    accum_freq=4 (manual optimization) ends where accum_freq=1 (automatic) ends. In float64:
    AdamW divides by the gradients' own scale, which turns float32 summation noise on
    near-zero gradients (attention key biases) into visible weight differences."""
    images, tokens = _global_batch(_module())
    data = torch.utils.data.TensorDataset(images.double().repeat(3, 1, 1, 1), tokens.repeat(3, 1))
    weights = []
    for accum_freq in (1, 4):
        module = _module(seed=0, accum_freq=accum_freq, warmup_steps=1)
        loader = torch.utils.data.DataLoader(data, batch_size=8)
        trainer = _trainer(tmp_path, max_epochs=1, limit_val_batches=0, precision="64-true")
        trainer.fit(module, loader)
        assert trainer.global_step == 3
        weights.append(module.model.state_dict())
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, atol=1e-10, rtol=1e-8, msg=name)


def test_accumulation_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="accum_freq"):
        _module(accum_freq=0)
    module = _module()
    images, tokens = _global_batch(module)
    with pytest.raises(ValueError, match=r"divisible by accum_freq=3, but got 8"):
        module.accumulated_backward(images, tokens, accum_freq=3)
