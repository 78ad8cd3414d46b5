"""Text encoders: equal to the library's own forward, exact under truncation, frozen."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from torch import nn

from lico_lightning.text import (
    HFTextEncoder,
    OpenCLIPTextEncoder,
    TextEncoder,
    create_text_encoder,
    list_text_encoders,
    minilm_path,
    tiny_openclip_config,
)

TEXTS = ["a photo of a cat.", "a type of aircraft: boeing 727-200", "dog", "x x x x sea turtle."]


# ---------------------------------------------------------------------------- open_clip
def test_openclip_tokenize_matches_open_clip_tokenizer(clip_encoder: OpenCLIPTextEncoder) -> None:
    ref = open_clip.SimpleTokenizer()(TEXTS)  # (S, 77), zero padded
    tok = clip_encoder.tokenize(TEXTS, context_length=77)
    torch.testing.assert_close(tok.ids, ref, rtol=0, atol=0)
    torch.testing.assert_close(tok.eot_index, ref.argmax(dim=-1), rtol=0, atol=0)
    torch.testing.assert_close(tok.attention_mask, torch.cumsum(ref == 0, 1) == 0)


def test_openclip_pooled_eot_equals_encode_text(
    tiny_clip: open_clip.CLIP, clip_encoder: OpenCLIPTextEncoder
) -> None:
    ids = open_clip.SimpleTokenizer()(TEXTS)
    with torch.no_grad():
        ref = tiny_clip.encode_text(ids)  # (S, K)
        feats = clip_encoder(clip_encoder.embed_tokens(ids))  # (S, 77, K)
    pooled = feats[torch.arange(len(TEXTS)), ids.argmax(dim=-1)]
    assert feats.shape == (len(TEXTS), 77, clip_encoder.output_dim)
    torch.testing.assert_close(pooled, ref, rtol=1e-5, atol=1e-6)


def test_openclip_truncation_is_exact(clip_encoder: OpenCLIPTextEncoder) -> None:
    short = clip_encoder.tokenize(TEXTS)  # padded to the longest text only
    full = clip_encoder.tokenize(TEXTS, context_length=77)
    length = short.ids.shape[1]
    assert length < 77
    with torch.no_grad():
        f_short = clip_encoder(clip_encoder.embed_tokens(short.ids), short.attention_mask)
        f_full = clip_encoder(clip_encoder.embed_tokens(full.ids), full.attention_mask)
    torch.testing.assert_close(f_short, f_full[:, :length], rtol=1e-5, atol=1e-5)


def test_openclip_by_name_and_checkpoint_path(tmp_path, tiny_clip: open_clip.CLIP) -> None:
    """The real loading path: open_clip.create_model(name, pretrained=<file>), visual dropped."""
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    (cfg_dir / "lico-tiny-test.json").write_text(json.dumps(tiny_openclip_config()))
    open_clip.add_model_config(cfg_dir)
    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_clip.state_dict(), ckpt)

    enc = OpenCLIPTextEncoder("lico-tiny-test", pretrained=str(ckpt))
    assert not any(name.startswith("visual") for name, _ in enc.named_parameters())
    ids = open_clip.SimpleTokenizer()(TEXTS)
    with torch.no_grad():
        pooled = enc(enc.embed_tokens(ids))[torch.arange(len(TEXTS)), ids.argmax(-1)]
        ref = tiny_clip.encode_text(ids)
    torch.testing.assert_close(pooled, ref, rtol=1e-5, atol=1e-6)

    random_enc = OpenCLIPTextEncoder("lico-tiny-test", pretrained=None)
    assert random_enc.output_dim == 32 and random_enc.context_length == 77


def test_openclip_unknown_model_name() -> None:
    with pytest.raises(ValueError, match=r"open_clip model.*'not-a-model'"):
        OpenCLIPTextEncoder("not-a-model", pretrained=None)


@pytest.mark.parametrize(
    ("text_cfg", "match"),
    [
        ({"no_causal_mask": True}, "bidirectional"),
        ({"embed_cls": True}, "class token"),
        ({"pool_type": "last"}, "pool_type"),
    ],
)
def test_openclip_unsupported_towers(text_cfg: dict, match: str) -> None:
    cfg = tiny_openclip_config()
    cfg["text_cfg"].update(text_cfg)
    if text_cfg.get("embed_cls") or text_cfg.get("pool_type"):
        cfg["custom_text"] = True
    with pytest.raises(ValueError, match=match):
        OpenCLIPTextEncoder(model_cfg=cfg)


def test_openclip_custom_text_tower_supported() -> None:
    cfg = tiny_openclip_config()
    model = open_clip.CustomTextCLIP(**cfg).eval()
    enc = OpenCLIPTextEncoder(model=model)
    ids = open_clip.SimpleTokenizer()(TEXTS)
    with torch.no_grad():
        pooled = enc(enc.embed_tokens(ids))[torch.arange(len(TEXTS)), ids.argmax(-1)]
        torch.testing.assert_close(pooled, model.encode_text(ids), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def layerscale_encoder() -> OpenCLIPTextEncoder:
    """A tiny tower with LayerScale (ls_1/ls_2 not Identity) and random, non-unit gammas."""
    cfg = tiny_openclip_config()
    cfg["text_cfg"]["ls_init_value"] = 0.5
    enc = OpenCLIPTextEncoder(model_cfg=cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in enc.transformer.resblocks:
            for ls in (block.ls_1, block.ls_2):
                ls.gamma.copy_(torch.empty(ls.gamma.shape).uniform_(-2, 2, generator=gen))
    return enc


@pytest.mark.parametrize("encoder", ["clip_encoder", "layerscale_encoder"])
def test_openclip_shared_prefix_equals_full_forward_values_and_gradients(
    encoder: str, request: pytest.FixtureRequest
) -> None:
    clip_encoder: OpenCLIPTextEncoder = request.getfixturevalue(encoder)
    assert clip_encoder.supports_shared_prefix
    gen = torch.Generator().manual_seed(0)
    pre = torch.randn(6, clip_encoder.width, generator=gen, requires_grad=True)
    suf = torch.randn(3, 4, clip_encoder.width, generator=gen, requires_grad=True)
    fp, fs = clip_encoder.forward_shared_prefix(pre, suf)
    w_p, w_s = torch.randn(fp.shape, generator=gen), torch.randn(fs.shape, generator=gen)
    g_pre, g_suf = torch.autograd.grad((fp * w_p).sum() + (fs * w_s).sum(), [pre, suf])

    full = clip_encoder(torch.cat([pre.expand(3, -1, -1), suf], dim=1))
    # the prefix rows are identical in every sequence; take them from one, as fp is one copy
    ref_g_pre, ref_g_suf = torch.autograd.grad(
        (full[0, :6] * w_p).sum() + (full[:, 6:] * w_s).sum(), [pre, suf]
    )
    for row in range(3):
        torch.testing.assert_close(fp, full[row, :6], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fs, full[:, 6:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_pre, ref_g_pre, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_suf, ref_g_suf, rtol=1e-4, atol=1e-5)


def test_openclip_shared_prefix_needs_standard_blocks_and_valid_shapes(
    clip_encoder: OpenCLIPTextEncoder,
) -> None:
    assert clip_encoder.supports_shared_prefix
    w = clip_encoder.width
    with pytest.raises(ValueError, match="prefix"):
        clip_encoder.forward_shared_prefix(torch.randn(3, w + 1), torch.randn(2, 2, w))
    with pytest.raises(ValueError, match="context length"):
        clip_encoder.forward_shared_prefix(torch.randn(70, w), torch.randn(2, 8, w))
    with pytest.raises(ValueError, match="2 dims"):
        clip_encoder.forward_shared_prefix(torch.randn(1, 3, w), torch.randn(2, 2, w))
    cfg = tiny_openclip_config()
    cfg["text_cfg"]["qk_norm"] = True  # open_clip's CustomResidualAttentionBlock
    custom = OpenCLIPTextEncoder(model_cfg=cfg)
    assert not custom.supports_shared_prefix
    with pytest.raises(ValueError, match="custom blocks"):
        custom.forward_shared_prefix(torch.randn(3, w), torch.randn(2, 2, w))


def test_shared_prefix_is_not_offered_by_default(minilm_encoder: HFTextEncoder) -> None:
    with pytest.raises(NotImplementedError, match="shared-prefix"):
        minilm_encoder.forward_shared_prefix(torch.randn(2, 384), torch.randn(2, 2, 384))


# ---------------------------------------------------------------------------- Hugging Face
def test_hf_equals_automodel_last_hidden_state(minilm_encoder: HFTextEncoder) -> None:
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    tok = minilm_encoder.tokenize(TEXTS)
    torch.testing.assert_close(tok.ids, batch["input_ids"], rtol=0, atol=0)
    torch.testing.assert_close(tok.attention_mask, batch["attention_mask"].bool())
    with torch.no_grad():
        ref = model(**batch).last_hidden_state
        ours = minilm_encoder(minilm_encoder.embed_tokens(tok.ids), tok.attention_mask)
    assert ours.shape == (len(TEXTS), tok.ids.shape[1], 384)
    valid = tok.attention_mask
    torch.testing.assert_close(ours[valid], ref[valid], rtol=1e-5, atol=1e-5)


def test_hf_truncation_is_exact(minilm_encoder: HFTextEncoder) -> None:
    short = minilm_encoder.tokenize(TEXTS)
    full = minilm_encoder.tokenize(TEXTS, context_length=40)
    length = short.ids.shape[1]
    with torch.no_grad():
        f_short = minilm_encoder(minilm_encoder.embed_tokens(short.ids), short.attention_mask)
        f_full = minilm_encoder(minilm_encoder.embed_tokens(full.ids), full.attention_mask)
    valid = short.attention_mask
    torch.testing.assert_close(f_short[valid], f_full[:, :length][valid], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- frozen, eval
@pytest.mark.parametrize("name", ["clip_encoder", "minilm_encoder"])
def test_frozen_but_differentiable_wrt_inputs(name: str, request: pytest.FixtureRequest) -> None:
    enc: TextEncoder = request.getfixturevalue(name)
    assert all(not p.requires_grad for p in enc.parameters())
    tok = enc.tokenize(TEXTS[:2])
    x = enc.embed_tokens(tok.ids).detach().requires_grad_(True)
    enc(x, tok.attention_mask).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())


@pytest.mark.parametrize("name", ["clip_encoder", "minilm_encoder"])
def test_parent_train_keeps_encoder_in_eval(name: str, request: pytest.FixtureRequest) -> None:
    enc: TextEncoder = request.getfixturevalue(name)
    parent = nn.ModuleDict({"encoder": enc, "head": nn.Dropout(0.5)})
    parent.train()
    assert parent["head"].training
    assert not any(m.training for m in enc.modules())
    tok = enc.tokenize(TEXTS)
    with torch.no_grad():
        a = enc(enc.embed_tokens(tok.ids), tok.attention_mask)
        b = enc(enc.embed_tokens(tok.ids), tok.attention_mask)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # no dropout
    parent.eval()


# ---------------------------------------------------------------------------- bad input
def test_forward_input_errors(clip_encoder: OpenCLIPTextEncoder) -> None:
    w = clip_encoder.width
    with pytest.raises(ValueError, match="width 32"):
        clip_encoder(torch.zeros(2, 5, w + 1))
    with pytest.raises(ValueError, match="at most 77 tokens"):
        clip_encoder(torch.zeros(2, 78, w))
    with pytest.raises(ValueError, match="3 dims"):
        clip_encoder(torch.zeros(5, w))
    with pytest.raises(TypeError, match="floating-point"):
        clip_encoder(torch.zeros(2, 5, w, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask.*\(2, 5\)"):
        clip_encoder(torch.zeros(2, 5, w), torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"torch\.long"):
        clip_encoder.embed_tokens(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="fit in 77 tokens"):
        clip_encoder.tokenize(["cat " * 80])
    with pytest.raises(TypeError, match="list of strings"):
        clip_encoder.tokenize("a cat")


# ---------------------------------------------------------------------------- registry
def test_registry_lists_and_builds_every_encoder() -> None:
    assert list_text_encoders() == ["hf", "minilm", "openclip"]
    kwargs = {
        "openclip": {"model_cfg": tiny_openclip_config()},
        "hf": {"model_name_or_path": minilm_path()},
        "minilm": {},
    }
    expected = {"openclip": OpenCLIPTextEncoder, "hf": HFTextEncoder, "minilm": HFTextEncoder}
    for name in list_text_encoders():
        enc = create_text_encoder(name, **kwargs[name])
        assert isinstance(enc, expected[name])
        assert not any(p.requires_grad for p in enc.parameters())


def test_registry_errors() -> None:
    with pytest.raises(
        ValueError,
        match=r"Expected a text encoder name, but got 'w2v'\. Available: hf, minilm, openclip\.",
    ):
        create_text_encoder("w2v")
    with pytest.raises(ValueError, match="model_name_or_path"):
        create_text_encoder("minilm", model_name_or_path="bert-base-uncased")


@pytest.mark.parametrize("path", ["/nonexistent/model", "./missing-dir", "models/mini/lm"])
def test_missing_local_model_path_says_so(path) -> None:
    with pytest.raises(ValueError, match=r"local path that does not exist"):
        create_text_encoder("hf", model_name_or_path=path)
