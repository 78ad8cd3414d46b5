"""M2IB explainer on tiny random open_clip models and a hand-made toy dual encoder."""

from __future__ import annotations

import math
from collections.abc import Sequence

import open_clip
import pytest
import torch
from torch import Tensor, nn

from lico_lightning.explain import M2IB, DualEncoder, ImageSpec, OpenCLIPDualEncoder, TextSpec
from lico_lightning.testing import tiny_clip

CAPTIONS = ["a photo of a dog on the grass", "two cats", "a red car near a house"]


def all_hooks(module: nn.Module) -> int:
    return sum(
        len(m._forward_pre_hooks) + len(m._forward_hooks) + len(m._backward_hooks)
        for m in module.modules()
    )


def inputs(enc: DualEncoder, n: int = 3, dtype: torch.dtype = torch.float32):
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(n, 3, 32, 32, generator=gen, dtype=dtype)
    return images, enc.tokenize(CAPTIONS[:n])


# --------------------------------------------------------------------------------------------
# Naive reference: the paper's formulas written out by hand on a copied forward of the tiny
# 2-block model, bottleneck after block 0.
# --------------------------------------------------------------------------------------------
def naive_block0(model: open_clip.CLIP, tower: str, images: Tensor, tokens: Tensor) -> Tensor:
    if tower == "image":
        v = model.visual
        x = v.conv1(images)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.reshape(1, 1, -1).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + v.positional_embedding
        x = v.ln_pre(x)
        return v.transformer.resblocks[0](x)
    x = model.token_embedding(tokens) + model.positional_embedding
    return model.transformer.resblocks[0](x, attn_mask=model.attn_mask)


def naive_rest(model: open_clip.CLIP, tower: str, z: Tensor, tokens: Tensor) -> Tensor:
    if tower == "image":
        v = model.visual
        x = v.ln_post(v.transformer.resblocks[1](z))
        return x[:, 0] @ v.proj
    x = model.transformer.resblocks[1](z, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens.argmax(-1)]
    return x @ model.text_projection


def naive_loss(model, tower, image, token, alpha, noise, beta, sigma2) -> Tensor:
    """Loss of ONE pair (image (1, C, H, W), token (1, S)), paper eqs. 4-5, 8, 15 literally."""
    r = naive_block0(model, tower, image, token)[0]  # (T, D)
    target = model.encode_text(token) if tower == "image" else model.encode_image(image)
    lam = 1.0 / (1.0 + torch.exp(-alpha))
    t = r.shape[0]
    if tower == "image":
        valid = torch.ones(t, dtype=torch.bool)
    else:
        valid = torch.arange(t) <= int(token[0].argmax())
    zs, cos = [], []
    for q in range(noise.shape[0]):
        z = lam * r + math.sqrt(sigma2) * (1.0 - lam) * noise[q]
        z = torch.where(valid[:, None], z, r)
        emb = naive_rest(model, tower, z[None], token)[0]
        cos.append(emb @ target[0] / (emb.norm() * target[0].norm()))
        zs.append(z)
    var = sigma2 * (1.0 - lam) ** 2
    kl = 0.5 * (var + (lam * r) ** 2 - 1.0 - torch.log(var))  # KL(N(λr, var) || N(0, 1))
    return beta * kl[valid].mean() - torch.stack(cos).mean()


@pytest.mark.parametrize("tower", ["image", "text"])
def test_objective_matches_naive_paper_formula(tower: str) -> None:
    model = tiny_clip().double().eval()
    enc = OpenCLIPDualEncoder(model)
    images, tokens = inputs(enc, 2, torch.float64)
    m2ib = M2IB(enc, tower, layer=0, beta=0.3, sigma2=0.5)
    t = 17 if tower == "image" else 77
    alpha = 2 * torch.randn(2, t, 32, dtype=torch.float64)
    noise = torch.randn(4, t, 32, dtype=torch.float64)
    got = m2ib.objective(images, tokens, alpha, noise)
    with torch.no_grad():
        want = torch.stack(
            [
                naive_loss(
                    model, tower, images[i : i + 1], tokens[i : i + 1], alpha[i], noise, 0.3, 0.5
                )
                for i in range(2)
            ]
        )
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("tower", ["image", "text"])
def test_attribution_matches_naive_optimisation(tower: str) -> None:
    """Full run == hand-written Adam loop on the naive loss, with the documented noise draws."""
    model = tiny_clip().double().eval()
    enc = OpenCLIPDualEncoder(model)
    images, tokens = inputs(enc, 2, torch.float64)
    steps, q, beta, sigma2, seed = 3, 4, 0.2, 0.7, 5
    out = M2IB(
        enc, tower, layer=0, beta=beta, sigma2=sigma2, steps=steps, num_copies=q, seed=seed
    ).attribute(images, tokens)
    t = 17 if tower == "image" else 77
    assert out.attribution.dtype == torch.float64  # dtype follows the model
    for i in range(2):
        image, token = images[i : i + 1], tokens[i : i + 1]
        gen = torch.Generator().manual_seed(seed)
        alpha = torch.full((t, 32), 5.0, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([alpha], lr=1.0)
        losses = []
        for _ in range(steps):
            noise = torch.randn(q, t, 32, generator=gen, dtype=torch.float64)
            opt.zero_grad()
            loss = naive_loss(model, tower, image, token, alpha, noise, beta, sigma2)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        with torch.no_grad():
            r = naive_block0(model, tower, image, token)[0]
            lam = torch.sigmoid(alpha)
            var = sigma2 * (1 - lam) ** 2
            kl = 0.5 * (var + (lam * r) ** 2 - 1 - torch.log(var))
            per_token = kl.sum(-1)
        torch.testing.assert_close(out.losses[:, i], torch.stack(losses))
        if tower == "image":
            torch.testing.assert_close(out.attribution[i], per_token[1:].reshape(4, 4))
            torch.testing.assert_close(out.capacity[i], kl.mean())
        else:
            eot = int(token[0].argmax())
            want = torch.zeros(77, dtype=torch.float64)
            want[1:eot] = per_token[1:eot]
            torch.testing.assert_close(out.attribution[i], want)
            torch.testing.assert_close(out.token_capacity[i, : eot + 1], per_token[: eot + 1])
            assert bool((out.token_capacity[i, eot + 1 :] == 0).all())
            torch.testing.assert_close(out.capacity[i], kl[: eot + 1].mean())
    model.zero_grad(set_to_none=True)  # the naive loop above backpropagated into the model


@pytest.mark.parametrize("tower", ["image", "text"])
def test_batched_pairs_equal_single_pairs(tower: str) -> None:
    enc = OpenCLIPDualEncoder(tiny_clip())
    images, tokens = inputs(enc, 3)
    m2ib = M2IB(enc, tower, layer=0, steps=4, num_copies=3)
    both = m2ib(images, tokens)
    chunked = M2IB(enc, tower, layer=0, steps=4, num_copies=3, max_pairs=2)(images, tokens)
    for name in ("attribution", "token_capacity", "capacity", "fit", "score", "losses"):
        torch.testing.assert_close(
            getattr(chunked, name), getattr(both, name), rtol=1e-4, atol=1e-4
        )
    for i in range(3):
        one = m2ib(images[i : i + 1], tokens[i : i + 1])
        for name in ("attribution", "token_capacity", "capacity", "fit", "score"):
            torch.testing.assert_close(
                getattr(both, name)[i], getattr(one, name)[0], rtol=1e-4, atol=1e-4
            )
        torch.testing.assert_close(both.losses[:, i], one.losses[:, 0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tower", ["image", "text"])
def test_other_tower_runs_once_as_constant_target(tower: str) -> None:
    model = tiny_clip().eval()
    enc = OpenCLIPDualEncoder(model)
    images, tokens = inputs(enc, 2)
    other = model.transformer if tower == "image" else model.visual
    calls: list[tuple[int, bool]] = []
    handle = other.register_forward_hook(
        lambda m, a, out: calls.append((out.shape[0], out.requires_grad))
    )
    try:
        out = M2IB(enc, tower, layer=0, steps=3, num_copies=2)(images, tokens)
    finally:
        handle.remove()
    assert calls == [(2, False)]
    with torch.no_grad():
        ei, et = model.encode_image(images), model.encode_text(tokens)
        torch.testing.assert_close(out.score, enc.similarity(ei, et))


def test_parameters_grads_flags_modes_untouched() -> None:
    model = tiny_clip().train()
    model.visual.transformer.resblocks[0].eval()
    params = list(model.parameters())
    for i, p in enumerate(params):
        if i % 3 == 0:
            p.grad = torch.randn_like(p)
        if i % 5 == 0:
            p.requires_grad_(False)
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    grad_ids = [None if p.grad is None else id(p.grad) for p in params]
    values = [p.detach().clone() for p in params]
    flags = [p.requires_grad for p in params]
    modes = {n: m.training for n, m in model.named_modules()}
    enc = OpenCLIPDualEncoder(model)
    images, tokens = inputs(enc, 2)
    for tower in ("image", "text"):
        M2IB(enc, tower, layer=0, steps=2, num_copies=2)(images, tokens)
    for p, g, gid, v, f in zip(params, grads, grad_ids, values, flags):
        assert p.requires_grad == f
        assert torch.equal(p.detach(), v)
        if g is None:
            assert p.grad is None
        else:
            assert id(p.grad) == gid and torch.equal(p.grad, g)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all_hooks(model) == 0


def test_training_step_unaffected() -> None:
    """Explaining between a training forward and its backward leaves the gradients as they were."""

    def train_grads(explain: bool) -> list[Tensor]:
        model = tiny_clip().train()
        enc = OpenCLIPDualEncoder(model)
        images, tokens = inputs(enc, 2)
        logits, _ = model.get_logits(images, tokens)
        loss = nn.functional.cross_entropy(logits, torch.arange(2))
        if explain:
            M2IB(enc, "image", layer=0, steps=2, num_copies=2)(images, tokens)
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for a, b in zip(train_grads(False), train_grads(True), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("tower", ["image", "text"])
def test_restores_everything_on_error_mid_optimisation(tower: str) -> None:
    model = tiny_clip().train()
    model.transformer.resblocks[1].eval()
    for p in list(model.parameters())[::4]:
        p.grad = torch.ones_like(p)
        p.requires_grad_(False)
    state = [
        (p.requires_grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()
    ]
    modes = {n: m.training for n, m in model.named_modules()}
    enc = OpenCLIPDualEncoder(model)
    images, tokens = inputs(enc, 2)
    block = (model.visual.transformer if tower == "image" else model.transformer).resblocks[1]
    seen = []

    def boom(module, args, output):
        seen.append(output.shape[0])
        if len(seen) == 3:  # the capture pass, step 1, then fail inside step 2
            raise RuntimeError("boom")

    handle = block.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            M2IB(enc, tower, layer=0, steps=5, num_copies=2)(images, tokens)
    finally:
        handle.remove()
    assert seen == [2, 4, 4]
    assert all_hooks(model) == 0
    assert {n: m.training for n, m in model.named_modules()} == modes
    for p, (flag, g) in zip(model.parameters(), state):
        assert p.requires_grad == flag
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)


def test_inference_mode() -> None:
    enc = OpenCLIPDualEncoder(tiny_clip())
    images, tokens = inputs(enc, 2)
    m2ib = M2IB(enc, "image", layer=0, steps=3, num_copies=2)
    want = m2ib(images, tokens)
    with torch.inference_mode():
        inf_images, inf_tokens = images.clone(), tokens.clone()
        got = m2ib(inf_images, inf_tokens)
    torch.testing.assert_close(got.attribution, want.attribution)
    torch.testing.assert_close(got.losses, want.losses)
    assert all_hooks(enc.module) == 0


def test_seeded_and_global_rng_untouched() -> None:
    enc = OpenCLIPDualEncoder(tiny_clip())
    images, tokens = inputs(enc, 2)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = M2IB(enc, "text", layer=0, steps=3, num_copies=2, seed=1)(images, tokens)
    assert torch.equal(torch.get_rng_state(), state)
    b = M2IB(enc, "text", layer=0, steps=3, num_copies=2, seed=1)(images, tokens)
    c = M2IB(enc, "text", layer=0, steps=3, num_copies=2, seed=2)(images, tokens)
    assert torch.equal(a.attribution, b.attribution) and torch.equal(a.fit, b.fit)
    assert not torch.allclose(a.attribution, c.attribution)


def test_result_helpers_and_settings() -> None:
    enc = OpenCLIPDualEncoder(tiny_clip())
    images, tokens = inputs(enc, 2)
    out = M2IB(enc, "image", layer=-1, beta=0.5, steps=2, num_copies=2)(images, tokens)
    assert out.settings.layer == -1 and out.settings.beta == 0.5 and out.settings.tower == "image"
    up = out.upsample()
    assert up.shape == (2, 32, 32)
    # bilinear with align_corners=False keeps a constant patch value at the patch centre
    near = out.upsample(mode="nearest")
    torch.testing.assert_close(near[:, ::8, ::8], out.attribution)
    assert out.losses.shape == (2, 2)
    assert bool((out.attribution >= 0).all())
    assert out.image_size == (32, 32)
    text = M2IB(enc, "text", layer=0, steps=1, num_copies=1)(images, tokens)
    with pytest.raises(ValueError, match="image side to upsample"):
        text.upsample()
    with pytest.raises(ValueError, match="size"):
        out.upsample(size=(0, 4))


# --------------------------------------------------------------------------------------------
# Sanity: a toy dual encoder where only some patches / tokens reach the embedding.
# --------------------------------------------------------------------------------------------
class _ToyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_blocks = nn.ModuleList([nn.Identity(), nn.Linear(4, 4)])
        self.text_blocks = nn.ModuleList([nn.Identity(), nn.Identity()])
        self.table = nn.Embedding(10, 4)


class ToyDualEncoder(DualEncoder):
    """Images (B, 1, 4, 4): 2×2 patches of 2×2 pixels, D = 4, no prefix token; only patches 0
    and 1 reach the embedding. Captions [SOT, a, b, c, d, EOT, PAD]: the embedding is the sum of
    the tokens at positions 1 and 2 (positions 3 and 4 are ignored)."""

    def __init__(self) -> None:
        self.net = _ToyNet()

    @property
    def module(self) -> nn.Module:
        return self.net

    @property
    def image_spec(self) -> ImageSpec:
        return ImageSpec((4, 4), (0.0,), (1.0,), (2, 2), (2, 2), 0)

    @property
    def text_spec(self) -> TextSpec:
        return TextSpec(7, sot_id=1, eot_id=9, pad_id=0, causal=True)

    @property
    def logit_scale(self) -> Tensor:
        return torch.tensor(1.0)

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        raise NotImplementedError

    @property
    def image_layers(self) -> Sequence[nn.Module]:
        return self.net.image_blocks

    @property
    def text_layers(self) -> Sequence[nn.Module]:
        return self.net.text_blocks

    def encode_image(self, images: Tensor) -> Tensor:
        b = images.shape[0]
        x = images.reshape(b, 2, 2, 2, 2).permute(0, 1, 3, 2, 4).reshape(b, 4, 4)
        for blk in self.net.image_blocks:
            x = blk(x)
        return x[:, 0] + x[:, 1]

    def encode_text(self, tokens: Tensor, token_mask: Tensor | None = None) -> Tensor:
        x = self.net.table(tokens)
        for blk in self.net.text_blocks:
            x = blk(x)
        return x[:, 1] + x[:, 2]


def test_toy_attribution_finds_the_relevant_patches_and_tokens() -> None:
    torch.manual_seed(0)
    enc = ToyDualEncoder()
    images = torch.randn(2, 1, 4, 4)
    tokens = torch.tensor([[1, 3, 4, 5, 6, 9, 0], [1, 5, 6, 3, 4, 9, 0]])
    with torch.no_grad():  # make the captions describe the images exactly
        emb = enc.encode_image(images)
        enc.net.table.weight[3] = emb[0] / 2
        enc.net.table.weight[4] = emb[0] / 2
        enc.net.table.weight[5] = emb[1] / 2
        enc.net.table.weight[6] = emb[1] / 2
    image_out = M2IB(enc, "image", layer=0)(images, tokens)
    heat = image_out.attribution.reshape(2, 4)
    assert bool((heat[:, :2].min(-1).values > 10 * heat[:, 2:].max(-1).values).all())
    text_out = M2IB(enc, "text", layer=0)(images, tokens)
    scores = text_out.attribution
    assert bool((scores[:, 1:3].min(-1).values > 10 * scores[:, 3:5].max(-1).values).all())
    assert bool((scores[:, [0, 5, 6]] == 0).all())
    assert bool((text_out.fit > 0.9).all()) and bool((image_out.fit > 0.9).all())


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"tower": "audio"}, ValueError, "tower"),
        ({"layer": 2}, ValueError, r"\[-2, 2\)"),
        ({"layer": 1.0}, TypeError, "layer"),
        ({"beta": -0.1}, ValueError, "beta"),
        ({"beta": float("nan")}, ValueError, "beta"),
        ({"beta": "0.1"}, TypeError, "beta"),
        ({"sigma2": 0.0}, ValueError, "sigma2"),
        ({"sigma2": float("inf")}, ValueError, "sigma2"),
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": 2.0}, TypeError, "steps"),
        ({"steps": True}, TypeError, "steps"),
        ({"num_copies": 0}, ValueError, "num_copies"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"init_alpha": float("inf")}, ValueError, "init_alpha"),
        ({"seed": -1}, ValueError, "seed"),
        ({"max_pairs": 0}, ValueError, "max_pairs"),
    ],
)
def test_bad_settings(kwargs, error, match: str) -> None:
    enc = OpenCLIPDualEncoder(tiny_clip())
    args = {"tower": "image", "layer": 0, **kwargs}
    with pytest.raises(error, match=match):
        M2IB(enc, args.pop("tower"), **args)


def test_unsupported_models() -> None:
    with pytest.raises(TypeError, match="DualEncoder"):
        M2IB(nn.Linear(2, 2), "image", layer=0)
    assert isinstance(M2IB(tiny_clip(), "image", layer=0).encoder, OpenCLIPDualEncoder)
    torch.manual_seed(0)
    resnet = tiny_clip(resnet=True)
    enc = OpenCLIPDualEncoder(resnet)
    with pytest.raises(ValueError, match="VisionTransformer"):
        M2IB(enc, "image", layer=0)
    M2IB(enc, "text", layer=0)  # the text tower of the same model is supported


def test_bad_inputs() -> None:
    enc = OpenCLIPDualEncoder(tiny_clip())
    images, tokens = inputs(enc, 2)
    m2ib = M2IB(enc, "image", layer=0, steps=1, num_copies=1)
    with pytest.raises(ValueError, match="same batch size"):
        m2ib(images, enc.tokenize(CAPTIONS[:3]))
    with pytest.raises(ValueError, match="spatial size"):
        m2ib(torch.randn(2, 3, 16, 16), tokens)
    with pytest.raises(TypeError, match="tokens"):
        m2ib(images, tokens.float())
    with pytest.raises(ValueError, match="EOT"):
        m2ib(images, torch.zeros_like(tokens))
    bad = images.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        m2ib(bad, tokens)
    with pytest.raises(ValueError, match="alpha"):
        m2ib.objective(images, tokens, torch.zeros(2, 5, 32), torch.zeros(1, 17, 32))
    assert all_hooks(enc.module) == 0
