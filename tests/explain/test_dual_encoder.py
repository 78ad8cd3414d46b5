"""Tests for the dual-encoder adapter (open_clip implementation on tiny random models)."""

from __future__ import annotations

import open_clip
import pytest
import torch
from torch import nn

from lico_lightning.explain import DualEncoder, OpenCLIPDualEncoder
from lico_lightning.testing import tiny_clip


def tiny_custom_text_clip() -> open_clip.CustomTextCLIP:
    return tiny_clip(custom_text=True)


def tiny_resnet_clip() -> open_clip.CLIP:
    return tiny_clip(resnet=True)


CAPTIONS = ["a photo of a dog on the grass", "two cats"]


def all_hooks(module: nn.Module) -> int:
    return sum(
        len(m._forward_pre_hooks) + len(m._forward_hooks) + len(m._backward_hooks)
        for m in module.modules()
    )


def masked_text_reference(model: nn.Module, tokens: torch.Tensor, drop: int) -> torch.Tensor:
    """Masking key ``drop`` everywhere == deleting that token after the positional embedding."""
    text = getattr(model, "text", model)
    x = text.token_embedding(tokens) + text.positional_embedding
    keep = [i for i in range(tokens.shape[1]) if i != drop]
    x = x[:, keep]
    s = x.shape[1]
    mask = text.attn_mask[:s, :s]
    x = text.transformer(x, attn_mask=mask)
    x = text.ln_final(x)
    eot = tokens.argmax(-1)
    eot = eot - (eot > drop).long()
    x = x[torch.arange(x.shape[0]), eot]
    return x @ text.text_projection


@pytest.mark.parametrize("factory", [tiny_clip, tiny_custom_text_clip])
def test_embeddings_equal_open_clip(factory) -> None:
    model = factory().eval()
    enc = OpenCLIPDualEncoder(model)
    images = torch.randn(3, 3, 32, 32)
    tokens = enc.tokenize([*CAPTIONS, "a red car"])
    with torch.no_grad():
        torch.testing.assert_close(enc.encode_image(images), model.encode_image(images))
        torch.testing.assert_close(enc.encode_text(tokens), model.encode_text(tokens))
        # an all-True mask changes nothing
        full = torch.ones_like(tokens, dtype=torch.bool)
        torch.testing.assert_close(enc.encode_text(tokens, full), model.encode_text(tokens))


def test_similarity_equals_logits_with_bias() -> None:
    model = tiny_clip(init_logit_bias=-3.0).eval()
    enc = OpenCLIPDualEncoder(model)
    images = torch.randn(2, 3, 32, 32)
    tokens = enc.tokenize(CAPTIONS)
    with torch.no_grad():
        logits, _ = model.get_logits(images, tokens)
        ei, et = enc.encode_image(images), enc.encode_text(tokens)
        torch.testing.assert_close(enc.similarity(ei, et, all_pairs=True), logits)
        torch.testing.assert_close(enc.similarity(ei, et), logits.diagonal())


@pytest.mark.parametrize("factory", [tiny_clip, tiny_custom_text_clip])
@pytest.mark.parametrize("drop", [1, 3, 5])
def test_token_mask_equals_token_deletion(factory, drop: int) -> None:
    model = factory().eval()
    enc = OpenCLIPDualEncoder(model)
    tokens = enc.tokenize(CAPTIONS[:1])
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, drop] = False
    with torch.no_grad():
        got = enc.encode_text(tokens, mask)
        ref = masked_text_reference(model, tokens, drop)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(got, model.encode_text(tokens), atol=1e-4)
    assert all_hooks(model) == 0


def test_token_mask_keeps_sot_and_eot() -> None:
    model = tiny_clip().eval()
    enc = OpenCLIPDualEncoder(model)
    tokens = enc.tokenize(CAPTIONS)
    eot = enc.eot_positions(tokens)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    mask[torch.arange(2), eot] = False
    with torch.no_grad():
        torch.testing.assert_close(enc.encode_text(tokens, mask), model.encode_text(tokens))


def test_token_mask_per_row() -> None:
    model = tiny_clip().eval()
    enc = OpenCLIPDualEncoder(model)
    tokens = enc.tokenize(CAPTIONS)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[0, 2] = False
    with torch.no_grad():
        both = enc.encode_text(tokens, mask)
        torch.testing.assert_close(both[0], masked_text_reference(model, tokens[:1], 2)[0])
        torch.testing.assert_close(both[1], model.encode_text(tokens[1:])[0])


@pytest.mark.parametrize("tower", ["image", "text"])
def test_capture_matches_forward_intermediates(tower: str) -> None:
    model = tiny_clip().eval()
    enc = OpenCLIPDualEncoder(model)
    images = torch.randn(2, 3, 32, 32)
    tokens = enc.tokenize(CAPTIONS)
    with torch.no_grad():
        out = model.forward_intermediates(
            image=images, text=tokens, image_indices=[0], text_indices=[0], image_output_fmt="NLC"
        )
        encode = (
            (lambda: enc.encode_image(images))
            if tower == "image"
            else (lambda: enc.encode_text(tokens))
        )
        with enc.capture(tower, 1, on="input") as inp, enc.capture(tower, 0, on="output") as out0:
            encode()
    ref = out[f"{tower}_intermediates"][0]
    if tower == "image":  # forward_intermediates drops the class token
        torch.testing.assert_close(inp[0][:, 1:], ref)
    else:
        torch.testing.assert_close(inp[0], ref)
    torch.testing.assert_close(inp[0], out0[0])
    assert all_hooks(model) == 0


def test_intervene_replaces_input_and_output() -> None:
    model = tiny_clip().eval()
    enc = OpenCLIPDualEncoder(model)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        base = enc.encode_image(images)
        with enc.intervene("image", -1, lambda x: x.clone()):
            same = enc.encode_image(images)
        with enc.capture("image", 0, on="output") as seen:
            enc.encode_image(images)
        # replacing block 1's input by block 0's output of other images = encoding those images
        other = torch.randn(2, 3, 32, 32)
        with enc.capture("image", 0, on="output") as seen_other:
            want = enc.encode_image(other)
        with enc.intervene("image", 1, lambda x: seen_other[0]):
            got = enc.encode_image(images)
        with enc.intervene("image", 0, lambda x: seen_other[0], on="output"):
            got_out = enc.encode_image(images)
    torch.testing.assert_close(same, base)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_out, want)
    assert len(seen) == 1
    assert all_hooks(model) == 0


def test_hooks_removed_on_error() -> None:
    model = tiny_clip().eval()
    enc = OpenCLIPDualEncoder(model)

    def boom(x: torch.Tensor) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), enc.intervene("text", 0, boom):
        enc.encode_text(enc.tokenize(CAPTIONS))
    assert all_hooks(model) == 0
    with pytest.raises(RuntimeError, match="inside"), enc.capture("image", 0):
        raise RuntimeError("inside")
    assert all_hooks(model) == 0


def test_explaining_restores_modes_and_checkpointing() -> None:
    model = tiny_clip().train()
    model.visual.transformer.resblocks[0].eval()  # a mixed state must come back as it was
    model.set_grad_checkpointing(True)
    before = {name: m.training for name, m in model.named_modules()}
    enc = OpenCLIPDualEncoder(model)
    with pytest.raises(RuntimeError), enc.explaining():
        assert not any(m.training for m in model.modules())
        assert not model.visual.transformer.grad_checkpointing
        assert not model.transformer.grad_checkpointing
        raise RuntimeError
    assert {name: m.training for name, m in model.named_modules()} == before
    assert model.visual.transformer.grad_checkpointing
    assert model.transformer.grad_checkpointing


def test_no_parameter_grad_change() -> None:
    model = tiny_clip()
    enc = OpenCLIPDualEncoder(model)
    images = torch.randn(2, 3, 32, 32)
    x = images.clone().requires_grad_()
    with enc.explaining():
        e = enc.encode_image(x)
        (g,) = torch.autograd.grad(e.sum(), x)
    assert g.shape == x.shape
    assert all(p.grad is None for p in model.parameters())


def test_mask_image_patches_matches_loop() -> None:
    enc = OpenCLIPDualEncoder(tiny_clip())
    images = torch.randn(2, 3, 32, 32)
    keep = torch.rand(2, 4, 4) > 0.5
    got = enc.mask_image_patches(images, keep)
    want = images.clone()
    for b in range(2):
        for i in range(4):
            for j in range(4):
                if not keep[b, i, j]:
                    want[b, :, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8] = 0.0
    torch.testing.assert_close(got, want)


def test_black_image_is_black_after_unnormalising() -> None:
    enc = OpenCLIPDualEncoder(tiny_clip())
    black = enc.black_image(torch.empty(2, 3, 32, 32))
    mean = torch.tensor(enc.image_spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(enc.image_spec.std).view(1, 3, 1, 1)
    torch.testing.assert_close(black * std + mean, torch.zeros(2, 3, 32, 32))


def test_specs() -> None:
    enc = OpenCLIPDualEncoder(tiny_clip())
    assert enc.image_spec.image_size == (32, 32)
    assert enc.image_spec.patch_size == (8, 8)
    assert enc.image_spec.grid_size == (4, 4)
    assert enc.image_spec.num_patches == 16
    assert enc.image_spec.num_prefix_tokens == 1
    spec = enc.text_spec
    tokens = enc.tokenize(CAPTIONS)
    assert (spec.context_length, spec.pad_id, spec.causal) == (77, 0, True)
    assert bool((tokens[:, 0] == spec.sot_id).all())
    eot = enc.eot_positions(tokens)
    assert bool((tokens[torch.arange(2), eot] == spec.eot_id).all())
    assert eot.tolist() == [int(t.nonzero().max()) for t in tokens]
    assert isinstance(enc, DualEncoder)
    assert len(enc.image_layers) == 2 and len(enc.text_layers) == 2


def test_resnet_tower_supports_encoding_only() -> None:
    model = tiny_resnet_clip().eval()
    enc = OpenCLIPDualEncoder(model)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc.encode_image(images), model.encode_image(images))
    assert enc.image_spec.grid_size is None
    keep = torch.ones(2, 4, 4, dtype=torch.bool)
    torch.testing.assert_close(enc.mask_image_patches(images, keep), images)
    with pytest.raises(ValueError, match="Supported: VisionTransformer"):
        enc.image_layers
    with pytest.raises(ValueError, match="VisionTransformer"):
        enc.intervene("image", 0, lambda x: None).__enter__()
    # the text side still has layers
    assert len(enc.text_layers) == 2


def test_errors() -> None:
    enc = OpenCLIPDualEncoder(tiny_clip())
    tokens = enc.tokenize(CAPTIONS)
    with pytest.raises(TypeError, match="CLIP or CustomTextCLIP"):
        OpenCLIPDualEncoder(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"in \[-2, 2\) for the image tower with 2 blocks"):
        enc.layer("image", 2)
    with pytest.raises(ValueError, match="tower"):
        enc.layer("audio", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on"):
        enc.capture("text", 0, on="middle").__enter__()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(B, 77\)"):
        enc.encode_text(tokens[:, :10])
    with pytest.raises(TypeError, match="int64"):
        enc.encode_text(tokens.float())
    with pytest.raises(TypeError, match="bool"):
        enc.encode_text(tokens, torch.ones_like(tokens))
    with pytest.raises(ValueError, match="like `tokens`"):
        enc.encode_text(tokens, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="spatial size"):
        enc.encode_image(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="EOT"):
        enc.eot_positions(torch.zeros(1, 77, dtype=torch.long))
    with pytest.raises(ValueError, match="batch size"):
        enc.similarity(torch.randn(2, 16), torch.randn(3, 16))
    with pytest.raises(ValueError, match="multiple of the grid"):
        enc.mask_image_patches(torch.randn(1, 3, 32, 32), torch.ones(1, 5, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="strings"):
        enc.tokenize("a dog")


def test_phrase_span() -> None:
    enc = OpenCLIPDualEncoder(tiny_clip())
    caption = "A dog chases a red ball, and the dog wins"
    tokens = enc.tokenize([caption])[0]
    start, end = enc.phrase_span(caption, "red ball")
    assert tokens[start:end].tolist() == enc.tokenize(["red ball"])[0, 1:3].tolist()
    assert enc.phrase_span(caption, "dog") == (2, 3)  # first occurrence
    with pytest.raises(ValueError, match="occur"):
        enc.phrase_span(caption, "blue ball")
    with pytest.raises(ValueError, match="non-empty"):
        enc.phrase_span(caption, " ")
    with pytest.raises(TypeError, match="`phrase` to be a str"):
        enc.phrase_span(caption, ["dog"])  # type: ignore[arg-type]


@pytest.mark.parametrize("factory", [tiny_clip, tiny_custom_text_clip])
@pytest.mark.parametrize("layer", [0, 1])
def test_allow_shorter_text_keeps_embeddings(factory, layer: int) -> None:
    model = factory().eval()
    enc = OpenCLIPDualEncoder(model)
    tokens = enc.tokenize(CAPTIONS)
    keep = int(enc.eot_positions(tokens).max()) + 1
    with torch.no_grad():
        want = model.encode_text(tokens)
        with (
            enc.allow_shorter_text(layer) as ok,
            enc.intervene("text", layer, lambda x: x[:, :keep]),
            enc.capture("text", -1, on="output") as seen,
        ):
            got = enc.encode_text(tokens)
    assert ok
    assert seen[0].shape[1] == keep
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert all_hooks(model) == 0


def test_pooled_rows_only_keeps_image_embeddings() -> None:
    model = tiny_clip().eval()
    enc = OpenCLIPDualEncoder(model)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = model.encode_image(images)
        with enc.pooled_rows_only("image") as ok:
            got = enc.encode_image(images)
            # also when the last block's input is replaced (as integrated Jacobians do)
            with enc.capture("image", -1) as seen:
                enc.encode_image(images)
            with enc.intervene("image", -1, lambda x: seen[0].flip(0)):
                flipped = enc.encode_image(images)
        with enc.pooled_rows_only("text") as ok_text:
            pass
    assert ok and not ok_text
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flipped, want.flip(0), rtol=1e-5, atol=1e-5)
    assert all_hooks(model) == 0
    torch.manual_seed(0)
    avg = OpenCLIPDualEncoder(tiny_clip(vision_cfg={"pool_type": "avg"}))
    with avg.pooled_rows_only("image") as ok_avg:
        assert not ok_avg


def test_caption_masks_match_a_loop_over_positions() -> None:
    enc = OpenCLIPDualEncoder(tiny_clip())
    tokens = enc.tokenize(["a dog", "a photo of a red car", "x"])
    seen, content = enc.caption_masks(tokens)
    eot_id = enc.text_spec.eot_id
    for b, row in enumerate(tokens.tolist()):
        eot = row.index(eot_id)
        assert seen[b].tolist() == [p <= eot for p in range(len(row))]
        assert content[b].tolist() == [0 < p < eot for p in range(len(row))]


def test_as_tokens_and_check_pairs() -> None:
    enc = OpenCLIPDualEncoder(tiny_clip())
    tokens = enc.tokenize(["a dog", "a cat"])
    assert torch.equal(enc.as_tokens(["a dog", "a cat"]), tokens)
    assert enc.as_tokens(tokens) is tokens
    with pytest.raises(TypeError, match="`captions` to be token ids"):
        enc.as_tokens("a dog", "captions")  # a bare string is not a batch
    with pytest.raises(TypeError, match="int64 token ids"):
        enc.as_tokens(tokens.float())
    images = torch.randn(2, 3, 32, 32)
    got_images, got_tokens = enc.check_pairs(images, ("a dog", "a cat"))
    assert got_images is images and torch.equal(got_tokens, tokens)
    with pytest.raises(ValueError, match="same batch size, but got 2 and 1"):
        enc.check_pairs(images, ["a dog"])
    with pytest.raises(ValueError, match="spatial size"):
        enc.check_pairs(torch.randn(2, 3, 16, 16), tokens)


def test_caption_longer_than_the_context_is_rejected_not_cut() -> None:
    enc = OpenCLIPDualEncoder(tiny_clip(context_length=8))
    assert enc.tokenize(["one two three four five six"]).shape == (1, 8)  # 6 tokens fit
    with pytest.raises(ValueError, match=r"at most 6 tokens .* caption 1 \('one two"):
        enc.tokenize(["a dog", "one two three four five six seven"])
    with pytest.raises(ValueError, match="at most 6 tokens"):
        enc.as_tokens(["one two three four five six seven"])
