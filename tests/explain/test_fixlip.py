"""FIxLIP on tiny random open_clip models against direct forwards and brute-force enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lico_lightning.explain import FIxLIP, FIxLIPAttribution, FIxLIPGame, OpenCLIPDualEncoder
from lico_lightning.functional import (
    area_between_insertion_deletion,
    greedy_subsets,
    spearman_correlation,
)
from lico_lightning.testing import tiny_clip

CAPTION = "a red dog runs"  # 4 text players


@pytest.fixture(scope="module")
def model() -> open_clip.CLIP:
    return tiny_clip(init_logit_bias=-2.0).eval()


@pytest.fixture(scope="module")
def enc(model) -> OpenCLIPDualEncoder:
    return OpenCLIPDualEncoder(model)


def images(b: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def direct_scores(model, enc, image, tokens, img_keep, txt_keep, grid, replace_id=None):
    """ν of row-matched (image mask, text mask) pairs by explicit masking and open_clip forwards."""
    hp, wp = grid
    ch, cw = 32 // hp, 32 // wp
    ims = image[None].repeat(len(img_keep), 1, 1, 1)
    for r, keep in enumerate(img_keep):
        for cell in range(hp * wp):
            if not keep[cell]:
                i, j = divmod(cell, wp)
                ims[r, :, i * ch : (i + 1) * ch, j * cw : (j + 1) * cw] = 0.0
    toks = tokens[None].repeat(len(txt_keep), 1)
    mask = torch.ones_like(toks, dtype=torch.bool)
    for r, keep in enumerate(txt_keep):
        for t, k in enumerate(keep):
            if not k:
                if replace_id is None:
                    mask[r, 1 + t] = False
                else:
                    toks[r, 1 + t] = replace_id
    with torch.no_grad():
        ei = F.normalize(model.encode_image(ims), dim=-1)
        et = enc.encode_text(toks) if replace_id is not None else enc.encode_text(toks, mask)
        et = F.normalize(et, dim=-1)
        return model.logit_scale.exp() * (ei * et).sum(-1) + model.logit_bias


def brute_force_table(model, enc, image, tokens, n_i, n_t, grid):
    """ν of every joint coalition (bit i of the code = player i present; image players first)."""
    n = n_i + n_t
    codes = range(2**n)
    bits = [[bool(c >> i & 1) for i in range(n)] for c in codes]
    return direct_scores(
        model, enc, image, tokens, [b[:n_i] for b in bits], [b[n_i:] for b in bits], grid
    ).double()


def dense_fixlip(table: torch.Tensor, n: int, p: float):
    rows, ws = [], []
    for c in range(2**n):
        x = [bool(c >> i & 1) for i in range(n)]
        rows.append(
            [
                1.0,
                *map(float, x),
                *[float(x[i] and x[j]) for i, j in itertools.combinations(range(n), 2)],
            ]
        )
        ws.append(p ** sum(x) * (1 - p) ** (n - sum(x)))
    xm, w = np.array(rows), np.sqrt(np.array(ws))
    sol = np.linalg.lstsq(xm * w[:, None], table.numpy() * w, rcond=None)[0]
    e2 = np.zeros((n, n))
    for (i, j), v in zip(itertools.combinations(range(n), 2), sol[1 + n :]):
        e2[i, j] = e2[j, i] = v
    return sol[0], sol[1 : 1 + n], e2


def banzhaf_values_brute_force(table: torch.Tensor, n: int, p: float) -> np.ndarray:
    out = np.zeros(n)
    for i in range(n):
        for c in range(2**n):
            if c >> i & 1:
                continue
            k = bin(c).count("1")
            out[i] += p**k * (1 - p) ** (n - 1 - k) * (table[c | 1 << i] - table[c]).item()
    return out


# ----------------------------------------------------------------------------- game values


@pytest.mark.parametrize("masking", ["attention", "replace"])
def test_cross_values_equal_direct_per_pair_forwards(model, enc, masking: str) -> None:
    image = images()[0]
    tokens = enc.tokenize([CAPTION])[0]
    replace_id = 320 if masking == "replace" else None
    game = FIxLIPGame(
        enc, image, tokens, text_masking=masking, replacement_token_id=replace_id, chunk_size=3
    )
    assert (game.n_image, game.n_text) == (16, 4)
    gen = torch.Generator().manual_seed(1)
    mi = torch.rand(5, 16, generator=gen) < 0.5
    mt = torch.rand(4, 4, generator=gen) < 0.5
    got = game.cross_values(mi, mt)
    assert got.shape == (5, 4)
    for a in range(5):
        for b in range(4):
            want = direct_scores(model, enc, image, tokens, [mi[a]], [mt[b]], (4, 4), replace_id)
            torch.testing.assert_close(got[a, b], want[0], rtol=1e-5, atol=1e-5)
    # joint coalitions give the same values as the matching cells
    joint = torch.cat([mi.repeat_interleave(4, 0), mt.repeat(5, 1)], 1)
    torch.testing.assert_close(game(joint), got.flatten(), rtol=1e-5, atol=1e-5)


def test_full_and_empty_scores(model, enc) -> None:
    x = images(2)
    tokens = enc.tokenize([CAPTION, "two cats"])
    att = FIxLIP(enc, estimator="exact", grid=(2, 2)).attribute(x, tokens)
    with torch.no_grad():
        logits, _ = model.get_logits(x, tokens)
    torch.testing.assert_close(att.score.float(), logits.diagonal(), rtol=1e-5, atol=1e-5)
    for b, n_t in enumerate([4, 2]):
        want = direct_scores(model, enc, x[b], tokens[b], [[False] * 4], [[False] * n_t], (2, 2))
        torch.testing.assert_close(att.empty_score[b].float(), want[0], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- exact mode


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_exact_mode_equals_brute_force_on_tiny_clip(model, enc, p: float) -> None:
    image = images()[0]
    tokens = enc.tokenize([CAPTION])[0]
    n_i, n_t = 4, 4
    table = brute_force_table(model, enc, image, tokens, n_i, n_t, (2, 2))
    c, e1, e2 = dense_fixlip(table, n_i + n_t, p)
    att = FIxLIP(enc, p=p, estimator="exact", grid=(2, 2)).attribute(image[None], tokens[None])
    scale = np.abs(e2).max()
    tol = dict(atol=2e-4 * scale, rtol=0)
    np.testing.assert_allclose(att.constant[0].item(), c, atol=1e-4)
    np.testing.assert_allclose(att.image_first_order[0].numpy(), e1[:n_i], **tol)
    np.testing.assert_allclose(att.text_first_order[0].numpy(), e1[n_i:], **tol)
    np.testing.assert_allclose(att.cross[0].numpy(), e2[n_i:, :n_i], **tol)
    np.testing.assert_allclose(att.image_pairs[0].numpy(), e2[:n_i, :n_i], **tol)
    np.testing.assert_allclose(att.text_pairs[0].numpy(), e2[n_i:, n_i:], **tol)
    # Theorem 1: first-order conversion == weighted Banzhaf values of the game
    img, txt = att.banzhaf_values()
    want = banzhaf_values_brute_force(table, n_i + n_t, p)
    np.testing.assert_allclose(torch.cat([img[0], txt[0]]).numpy(), want, **tol)


@pytest.mark.parametrize("estimator", ["cross_modal", "model_agnostic"])
def test_estimators_with_a_full_budget_equal_exact(enc, estimator: str) -> None:
    x, texts = images(), [CAPTION]
    exact = FIxLIP(enc, estimator="exact", grid=(2, 2), p=0.6).attribute(x, texts)
    est = FIxLIP(enc, estimator=estimator, budget=2**8, grid=(2, 2), p=0.6).attribute(x, texts)
    for name in ("constant", "image_first_order", "text_first_order", "cross", "image_pairs"):
        torch.testing.assert_close(getattr(est, name), getattr(exact, name), atol=1e-5, rtol=1e-5)


def test_cross_modal_estimate_gets_closer_to_exact_with_budget(enc) -> None:
    # 4 image and 7 text players: the text side (2^7 coalitions) is sampled, not enumerated
    x, texts = images(), ["a small red dog runs on grass"]
    kw = dict(grid=(2, 2), p=0.5, interactions="cross")
    exact = FIxLIP(enc, estimator="exact", **kw).attribute(x, texts)
    errors = []
    for split in [(16, 12), (16, 40), (16, 120)]:
        errs = [
            (FIxLIP(enc, budget_split=split, seed=s, **kw).attribute(x, texts).cross - exact.cross)
            .square()
            .mean()
            .sqrt()
            .item()
            for s in range(2)
        ]
        errors.append(float(np.mean(errs)))
    assert errors[0] > errors[1] > errors[2]


# ----------------------------------------------------------------------------- filtering, layout


def test_two_step_filtering_on_tiny_clip(enc) -> None:
    x, texts = images(), ["a small red dog"]  # 16 patches + 4 tokens = 20 players
    kw = dict(budget_split=(160, 16), p=0.5, seed=3)
    att = FIxLIP(enc, clique_size=8, **kw).attribute(x, texts)
    first = FIxLIP(enc, interactions="none", **kw).attribute(x, texts)
    # k_T = min(4, max(5, ceil(8·4/20))) = 4 text and k_I = 4 image players by |e_i|
    assert int(att.text_clique.sum()) == 4 and int(att.image_clique.sum()) == 4
    top = first.image_first_order[0].abs().argsort(descending=True)[:4]
    assert set(att.image_clique[0].nonzero().flatten().tolist()) == set(top.tolist())
    out_img = ~att.image_clique[0]
    assert bool((att.cross[0][:, out_img] == 0).all())
    assert bool((att.image_pairs[0][out_img] == 0).all())
    assert bool((att.cross[0][:, ~out_img] != 0).all())
    assert first.image_pairs is None and bool((first.cross == 0).all())


def test_layout_helpers(enc) -> None:
    x = images(2)
    tokens = enc.tokenize([CAPTION, "two cats"])
    att = FIxLIP(enc, estimator="exact", grid=(2, 2)).attribute(x, tokens)
    assert att.cross.shape == (2, 4, 4) and att.text_pairs.shape == (2, 4, 4)
    assert att.num_text_players.tolist() == [4, 2]
    assert att.token_positions.tolist() == [[1, 2, 3, 4], [1, 2, -1, -1]]
    assert bool((att.cross[1, 2:] == 0).all()) and bool((att.text_first_order[1, 2:] == 0).all())
    ctx = att.to_context(77)
    assert ctx.shape == (2, 77, 2, 2)
    torch.testing.assert_close(ctx[0, 1:5].flatten(1), att.cross[0])
    torch.testing.assert_close(ctx[1, 1:3].flatten(1), att.cross[1, :2])
    assert bool((ctx[:, 0] == 0).all()) and bool((ctx[1, 3:] == 0).all())
    assert att.cross_grid().shape == (2, 4, 2, 2)
    e = att.joint(1)
    assert e.first_order.shape == (6,) and e.second_order.shape == (6, 6)
    torch.testing.assert_close(e.second_order[4:, :4], att.cross[1, :2])
    torch.testing.assert_close(e.second_order, e.second_order.T)
    # explaining a pair alone gives the same explanation as inside a batch
    alone = FIxLIP(enc, estimator="exact", grid=(2, 2)).attribute(x[1:], tokens[1:])
    torch.testing.assert_close(alone.cross[0], att.cross[1, :2])


# ----------------------------------------------------------------------------- metrics glue


def test_insertion_deletion_and_faithfulness(enc) -> None:
    x, texts = images(2), [CAPTION, "two cats"]
    fixlip = FIxLIP(enc, estimator="exact", grid=(2, 2), p=0.5)
    att = fixlip.attribute(x, texts)
    ins, dele = fixlip.insertion_deletion(x, texts, att)
    tokens = enc.tokenize(texts)
    for b in range(2):
        n = 4 + int(att.num_text_players[b])
        assert ins[b].shape == (n + 1,) and dele[b].shape == (n + 1,)
        torch.testing.assert_close(ins[b][0].double(), att.empty_score[b], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ins[b][-1].double(), att.score[b], rtol=1e-5, atol=1e-5)
        e = att.joint(b)
        masks, _ = greedy_subsets(e.first_order, e.second_order, e.constant, maximize=True)
        n_t = n - 4
        want = direct_scores(
            fixlip.encoder.module, enc, x[b], tokens[b], masks[:, :4], masks[:, 4:], (2, 2)
        )
        torch.testing.assert_close(ins[b], want, rtol=1e-5, atol=1e-5)
        assert n_t == int(att.num_text_players[b])
        area_between_insertion_deletion(ins[b], dele[b])
    nu, approx = fixlip.faithfulness_samples(x, texts, att, num_masks=64)
    assert nu.shape == approx.shape == (2, 64)
    good = spearman_correlation(nu, approx)
    shuffled = FIxLIPAttribution(**{**att.__dict__, "cross": att.cross.flip(-1)})
    shuffled.image_first_order = att.image_first_order.flip(-1)
    _, bad_approx = fixlip.faithfulness_samples(x, texts, shuffled, num_masks=64)
    bad = spearman_correlation(nu, bad_approx)
    assert bool((good > 0.9).all()) and bool((good > bad).all())


# ----------------------------------------------------------------------------- safety


def all_hooks(module: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in module.modules())


def test_training_model_is_not_perturbed() -> None:
    model = tiny_clip().train()
    model.visual.transformer.resblocks[0].eval()
    model.token_embedding.requires_grad_(False)
    for i, prm in enumerate(model.parameters()):
        if i % 3 == 0:
            prm.grad = torch.full_like(prm, 0.5)
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    req = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    enc = OpenCLIPDualEncoder(model)
    rng = torch.random.get_rng_state()
    fixlip = FIxLIP(enc, estimator="cross_modal", budget=2**8, grid=(2, 2), p=0.5)
    att = fixlip.attribute(images(), [CAPTION])
    with torch.inference_mode():
        att_inf = fixlip.attribute(images(), [CAPTION])
    torch.testing.assert_close(att_inf.cross, att.cross)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == req
    for n, p in model.named_parameters():
        if grads[n] is None:
            assert p.grad is None
        else:
            assert torch.equal(p.grad, grads[n])
    assert all_hooks(model) == 0
    assert not att.cross.requires_grad
    # same seed, same explanation
    torch.testing.assert_close(fixlip.attribute(images(), [CAPTION]).cross, att.cross)


def test_resnet_tower_needs_a_grid() -> None:
    enc = OpenCLIPDualEncoder(tiny_clip(resnet=True))
    with pytest.raises(ValueError, match="without a patch grid"):
        FIxLIP(enc, estimator="exact").attribute(images(), ["a dog"])
    att = FIxLIP(enc, estimator="exact", grid=(2, 2)).attribute(images(), ["a dog"])
    assert att.cross.shape == (1, 2, 4)


# ----------------------------------------------------------------------------- errors


def test_errors(enc) -> None:
    x = images()
    for p in (0.0, 1.0, 2.0):
        with pytest.raises(ValueError, match=r"`p` in \(0, 1\)"):
            FIxLIP(enc, p=p)
    with pytest.raises(ValueError, match="estimator"):
        FIxLIP(enc, estimator="dense")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interactions"):
        FIxLIP(enc, interactions="pairs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="text_masking"):
        FIxLIP(enc, text_masking="drop")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="DualEncoder"):
        FIxLIP(nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`budget` >= 4"):
        FIxLIP(enc, budget=2)
    with pytest.raises(ValueError, match="at most 14 players"):
        FIxLIP(enc, estimator="exact").attribute(x, [CAPTION])  # 16 patches + 4 tokens
    with pytest.raises(ValueError, match=r"budget large enough.*budget >= \d+"):
        FIxLIP(enc, budget=64).attribute(x, [CAPTION])
    with pytest.raises(ValueError, match="at least 211 coalitions"):
        FIxLIP(enc, estimator="model_agnostic", budget=64).attribute(x, [CAPTION])
    with pytest.raises(ValueError, match="same batch size"):
        FIxLIP(enc, estimator="exact", grid=(2, 2)).attribute(images(2), [CAPTION])
    with pytest.raises(TypeError, match="list of strings"):
        FIxLIP(enc, estimator="exact", grid=(2, 2)).attribute(x, CAPTION)
    with pytest.raises(ValueError, match="between SOT and EOT"):
        FIxLIP(enc, estimator="exact", grid=(2, 2)).attribute(x, [""])
    with pytest.raises(ValueError, match="divides the image size"):
        FIxLIP(enc, estimator="exact", grid=(3, 3)).attribute(x, [CAPTION])
    with pytest.raises(ValueError, match="two positive ints"):
        FIxLIP(enc, grid=(0, 2))
    with pytest.raises(ValueError, match="spatial size"):
        FIxLIP(enc, estimator="exact", grid=(2, 2)).attribute(torch.randn(1, 3, 16, 16), [CAPTION])
    fixlip = FIxLIP(enc, estimator="exact", grid=(2, 2))
    att = fixlip.attribute(x, [CAPTION])
    with pytest.raises(ValueError, match="has 8"):
        fixlip.insertion_deletion(x, ["a red dog sits down"], att)
    with pytest.raises(ValueError, match="attribution of 2 pairs, but got 1"):
        fixlip.faithfulness_samples(images(2), [CAPTION, CAPTION], att)
    with pytest.raises(ValueError, match="`index`"):
        att.joint(3)
    with pytest.raises(TypeError, match="`index` to be an int"):
        att.joint(0.0)  # type: ignore[arg-type]
    bad = x.clone()
    bad[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="`images` to be finite"):
        fixlip.attribute(bad, [CAPTION])
    with pytest.raises(ValueError, match="`image` to be finite"):
        fixlip.game(bad[0], enc.tokenize([CAPTION])[0])
    game = fixlip.game(x[0], enc.tokenize([CAPTION])[0])
    with pytest.raises(ValueError, match=r"\(m, 4\)"):
        game.cross_values(torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        game(torch.ones(2, 8))
