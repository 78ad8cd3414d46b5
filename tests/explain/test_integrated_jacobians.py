"""Integrated Jacobians / Interaction-CAM against naive autograd references and eq. 2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lico_lightning.explain import (
    DualEncoder,
    ImageSpec,
    IntegratedJacobians,
    InteractionCAM,
    OpenCLIPDualEncoder,
    TextSpec,
)
from lico_lightning.testing import tiny_clip

CAPTIONS = ["a dog on the grass", "a red car"]


def tiny_encoder(dtype: torch.dtype = torch.float64) -> OpenCLIPDualEncoder:
    torch.manual_seed(0)  # the tests' random inputs
    model = tiny_clip().to(dtype)
    return OpenCLIPDualEncoder(model)


def pad_reference(enc: DualEncoder, tokens: torch.Tensor) -> torch.Tensor:
    spec = enc.text_spec
    ref = torch.full_like(tokens, spec.pad_id)
    for i, row in enumerate(tokens):
        ref[i, 0] = spec.sot_id
        ref[i, int((row == spec.eot_id).nonzero()[0])] = spec.eot_id
    return ref


# --------------------------------------------------------------- naive reference
def naive_side(enc, modality, inputs, ref_inputs, layer, n_steps):
    """Integrated Jacobian of one input: K backward passes (one per embedding dim)."""
    run = enc.encode_image if modality == "image" else enc.encode_text
    with enc.capture(modality, layer) as seen:
        run(inputs if ref_inputs is None else torch.cat([inputs, ref_inputs]))
    x = seen[0][:1]
    r = torch.zeros_like(x) if ref_inputs is None else seen[0][1:]
    alphas = torch.arange(1, n_steps + 1, dtype=x.dtype) / n_steps
    h = (r + alphas[:, None, None] * (x - r)).detach().requires_grad_()
    with enc.intervene(modality, layer, lambda _: h):
        e = run(inputs.expand(n_steps, *inputs.shape[1:]))
    if enc.normalize_embeddings:
        e = F.normalize(e, dim=-1)
    jac = []
    for k in range(e.shape[1]):
        (g,) = torch.autograd.grad(e[:, k].sum(), h, retain_graph=True)
        jac.append(g.mean(0))
    return torch.stack(jac), (x - r)[0]  # (K, T, D), (T, D)


def naive_interactions(enc, sides, n_steps):
    """exCLIP-style: dense (Ta·Da) × (Tb·Db) matrix, then sum the hidden dims."""
    (ja, da), (jb, db) = (naive_side(enc, *side, n_steps) for side in sides)
    k, ta, dim_a = ja.shape
    _, tb, dim_b = jb.shape
    dense = ja.reshape(k, -1).T @ jb.reshape(k, -1)
    dense = da.reshape(-1, 1) * dense * db.reshape(1, -1)
    return enc.logit_scale.detach() * dense.reshape(ta, dim_a, tb, dim_b).sum((1, 3))


def naive_pair(enc, image, tokens, n_steps, image_ref="zeros", text_ref="pad", layers=(-1, -1)):
    ref_img = {"zeros": torch.zeros_like(image), "hidden_zeros": None}[image_ref]
    ref_txt = {"pad": pad_reference(enc, tokens), "hidden_zeros": None}[text_ref]
    with enc.explaining(), torch.enable_grad():
        return naive_interactions(
            enc,
            [("text", tokens, ref_txt, layers[1]), ("image", image, ref_img, layers[0])],
            n_steps,
        )


# ------------------------------------------------------------------ the tests
@pytest.mark.parametrize("layers", [(-1, -1), (0, 1)])
def test_matches_naive_reference(layers) -> None:
    enc = tiny_encoder()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    tokens = enc.tokenize(CAPTIONS)
    ij = IntegratedJacobians(
        enc, n_steps=3, image_layer=layers[0], text_layer=layers[1], internal_batch_size=64
    )
    res = ij.attribute(images=images, texts=tokens)
    assert res.matrix.shape == (2, 77, 17)
    for i in range(2):
        want = naive_pair(enc, images[i : i + 1], tokens[i : i + 1], 3, layers=layers)
        torch.testing.assert_close(res.matrix[i], want, rtol=1e-7, atol=1e-9)


def test_interaction_cam_is_jacobian_times_input() -> None:
    enc = tiny_encoder()
    images = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    tokens = enc.tokenize(CAPTIONS[:1])
    res = InteractionCAM(enc).attribute(images=images, texts=tokens)
    want = naive_pair(enc, images, tokens, 1, image_ref="hidden_zeros", text_ref="hidden_zeros")
    torch.testing.assert_close(res.matrix[0], want, rtol=1e-7, atol=1e-9)
    assert res.method == "interaction_cam"


def test_reference_terms_are_model_scores() -> None:
    enc = tiny_encoder()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    tokens = enc.tokenize(CAPTIONS)
    res = IntegratedJacobians(enc, n_steps=2).attribute(images=images, texts=tokens)
    with torch.no_grad():
        ei, et = enc.encode_image(images), enc.encode_text(tokens)
        ri = enc.encode_image(torch.zeros_like(images))
        rt = enc.encode_text(pad_reference(enc, tokens))
        # side a = caption, side b = image
        torch.testing.assert_close(res.score, enc.similarity(ei, et))
        torch.testing.assert_close(res.reference_scores[:, 0], enc.similarity(ei, rt))
        torch.testing.assert_close(res.reference_scores[:, 1], enc.similarity(ri, et))
        torch.testing.assert_close(res.reference_scores[:, 2], enc.similarity(ri, rt))


def test_black_reference() -> None:
    enc = tiny_encoder()
    images = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    tokens = enc.tokenize(CAPTIONS[:1])
    res = IntegratedJacobians(enc, n_steps=2, image_reference="black").attribute(
        images=images, texts=tokens
    )
    with torch.no_grad():
        black = enc.black_image(images)
        want = enc.similarity(enc.encode_image(black), enc.encode_text(tokens))
    torch.testing.assert_close(res.reference_scores[:, 1], want)


def test_completeness_error_decreases_with_steps() -> None:
    enc = tiny_encoder()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    tokens = enc.tokenize(CAPTIONS)
    errors = []
    for n in (2, 8, 32):
        res = IntegratedJacobians(enc, n_steps=n, internal_batch_size=1024).attribute(
            images=images, texts=tokens
        )
        errors.append(float(res.completeness_residual().abs().sum()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.25 * errors[0]
    assert errors[2] < 0.01 * float(res.score.abs().sum())


def test_causal_text_tokens_after_eot_and_sot_get_nothing() -> None:
    enc = tiny_encoder()
    tokens = enc.tokenize(CAPTIONS)
    res = IntegratedJacobians(enc, n_steps=2).attribute(
        images=torch.randn(2, 3, 32, 32, dtype=torch.float64), texts=tokens
    )
    eot = enc.eot_positions(tokens)
    per_token = res.matrix.abs().sum(-1)  # (B, S)
    for i in range(2):
        assert float(per_token[i, eot[i] + 1 :].max()) == 0.0
        assert float(per_token[i, 0]) == 0.0  # SOT equals the reference's SOT
        assert float(per_token[i, 1 : eot[i]].min()) > 0.0


def test_all_pairs_equal_per_pair_calls() -> None:
    enc = tiny_encoder()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    texts = [*CAPTIONS, "three birds"]
    ij = IntegratedJacobians(enc, n_steps=3, internal_batch_size=512)
    res = ij.attribute(images=images, texts=texts, all_pairs=True)
    assert res.matrix.shape == (3, 2, 77, 17)
    assert res.interactions.shape == (3, 2, 77, 4, 4)
    for j in range(2):
        for i in (0, 2):
            one = ij.attribute(images=images[j : j + 1], texts=texts[i : i + 1])
            torch.testing.assert_close(res.matrix[i, j], one.matrix[0])
            torch.testing.assert_close(res.score[i, j], one.score[0])
            torch.testing.assert_close(res.reference_scores[i, j], one.reference_scores[0])


def test_text_text_and_image_image() -> None:
    enc = tiny_encoder()
    ij = IntegratedJacobians(enc, n_steps=3)
    tokens = enc.tokenize(CAPTIONS)
    other = enc.tokenize(["a puppy in a field", "a truck"])
    tt = ij.attribute(texts=tokens, texts_b=other)
    assert tt.interactions.shape == (2, 77, 77)
    with enc.explaining(), torch.enable_grad():
        ref = pad_reference(enc, tokens)
        ref_b = pad_reference(enc, other)
        for i in range(2):
            want = naive_interactions(
                enc,
                [
                    ("text", tokens[i : i + 1], ref[i : i + 1], -1),
                    ("text", other[i : i + 1], ref_b[i : i + 1], -1),
                ],
                3,
            )
            torch.testing.assert_close(tt.matrix[i], want, rtol=1e-7, atol=1e-9)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ii = ij.attribute(images=images, images_b=images.flip(0))
    assert ii.interactions.shape == (2, 4, 4, 4, 4)
    # the same pair seen from either side is the transposed matrix
    torch.testing.assert_close(ii.matrix[0], ii.matrix[1].T)
    assert float(ii.completeness_residual().abs().max()) < 0.2 * float(ii.score.abs().max())


def test_projections() -> None:
    enc = tiny_encoder()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    res = IntegratedJacobians(enc, n_steps=2).attribute(images=images, texts=CAPTIONS)
    inter = res.interactions  # (B, S, 4, 4)
    torch.testing.assert_close(res.project_span((1, 3)), inter[:, 1:3].sum(1))
    spans = torch.tensor([[1, 2], [2, 4]])
    got = res.project_span(spans)
    torch.testing.assert_close(got[0], inter[0, 1:2].sum(0))
    torch.testing.assert_close(got[1], inter[1, 2:4].sum(0))
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 16.0, 32.0, 32.0]])
    got = res.project_box(boxes)
    want = torch.zeros(2, 77, dtype=torch.float64)
    for b, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        for i in range(4):
            for j in range(4):
                cx, cy = (j + 0.5) * 8, (i + 0.5) * 8
                if x1 <= cx <= x2 and y1 <= cy <= y2:
                    want[b] += inter[b, :, i, j]
    torch.testing.assert_close(got, want)
    up = res.upsample(torch.ones(2, 4, 4, dtype=torch.float64))
    torch.testing.assert_close(up, torch.ones(2, 32, 32, dtype=torch.float64))
    assert res.upsample(res.project_span((1, 3))).shape == (2, 32, 32)
    # all pairs: spans per caption, boxes per image
    allp = IntegratedJacobians(enc, n_steps=1).attribute(
        images=images, texts=CAPTIONS, all_pairs=True
    )
    torch.testing.assert_close(allp.project_span(spans)[1, 0], allp.interactions[1, 0, 2:4].sum(0))
    assert allp.project_box(boxes).shape == (2, 2, 77)


def test_safe_on_a_training_model() -> None:
    enc = tiny_encoder(torch.float32)
    model = enc.module.train()
    model.visual.transformer.resblocks[1].eval()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    grads = [p.grad.clone() for p in model.parameters()]
    modes = {n: m.training for n, m in model.named_modules()}
    requires = [p.requires_grad for p in model.parameters()]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    images = torch.randn(1, 3, 32, 32)
    IntegratedJacobians(enc, n_steps=2).attribute(images=images, texts=CAPTIONS[:1])
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert [p.requires_grad for p in model.parameters()] == requires
    assert torch.backends.mha.get_fastpath_enabled() == fastpath
    assert sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()) == 0


def test_under_inference_mode() -> None:
    enc = tiny_encoder(torch.float32)
    images = torch.randn(1, 3, 32, 32)
    tokens = enc.tokenize(CAPTIONS[:1])
    ij = IntegratedJacobians(enc, n_steps=2)
    want = ij.attribute(images=images, texts=tokens)
    with torch.inference_mode():
        got = ij.attribute(images=images.clone(), texts=tokens.clone())
    torch.testing.assert_close(got.matrix, want.matrix)


# ------------------------------------------------- a hand-made bilinear dual encoder
class LinearBlock(nn.Module):
    """Affine token mixing: x + M (x W + c) — any composition of these is affine."""

    def __init__(self, tokens: int, width: int) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.randn(tokens, tokens) / tokens)
        self.lin = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix @ self.lin(x)


class ToyBilinear(DualEncoder):
    """Affine towers compared by a scaled dot product: eq. 2 = eq. 10 exactly for any N."""

    normalize_embeddings = False

    def __init__(self) -> None:
        torch.manual_seed(0)
        d, k, s = 6, 5, 7
        self.net = nn.ModuleDict(
            {
                "patch": nn.Linear(3 * 4 * 4, d),
                "img_blocks": nn.ModuleList([LinearBlock(5, d) for _ in range(2)]),
                "img_proj": nn.Linear(d, k),
                "tok": nn.Embedding(10, d),
                "txt_blocks": nn.ModuleList([LinearBlock(s, d) for _ in range(2)]),
                "txt_proj": nn.Linear(d, k),
            }
        ).double()
        self.cls = torch.randn(1, 1, d, dtype=torch.float64)

    module = property(lambda self: self.net)
    image_spec = property(lambda self: ImageSpec((8, 8), (0.0,) * 3, (1.0,) * 3, (4, 4), (2, 2), 1))
    text_spec = property(lambda self: TextSpec(7, 1, 2, 0, causal=False))
    logit_scale = property(lambda self: torch.tensor(3.0, dtype=torch.float64))
    image_layers = property(lambda self: self.net["img_blocks"])
    text_layers = property(lambda self: self.net["txt_blocks"])

    def encode_image(self, images):
        p = images.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).flatten(3)
        x = self.net["patch"](p.flatten(1, 2))
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1)
        for blk in self.net["img_blocks"]:
            x = blk(x)
        return self.net["img_proj"](x[:, 0])

    def encode_text(self, tokens, token_mask=None):
        if token_mask is not None:
            raise ValueError("Expected no token_mask, but the toy cannot mask.")
        x = self.net["tok"](tokens)
        for blk in self.net["txt_blocks"]:
            x = blk(x)
        return self.net["txt_proj"](x[torch.arange(len(x)), self.eot_positions(tokens)])

    def tokenize(self, texts):
        out = torch.zeros(len(texts), 7, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [1, *[3 + len(w) % 7 for w in t.split()][:5], 2]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


@pytest.mark.parametrize("n_steps", [1, 3])
def test_bilinear_toy_is_exactly_complete(n_steps: int) -> None:
    enc = ToyBilinear()
    images = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    texts = ["a dog", "the red car", "birds in the sky"]
    res = IntegratedJacobians(enc, n_steps=n_steps).attribute(images=images, texts=texts)
    torch.testing.assert_close(
        res.completeness_residual(), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0
    )
    assert res.interactions.shape == (3, 7, 2, 2)
    want = naive_pair(enc, images[:1], enc.tokenize(texts[:1]), n_steps)
    torch.testing.assert_close(res.matrix[0], want)


def test_errors() -> None:
    enc = tiny_encoder(torch.float32)
    ij = IntegratedJacobians(enc, n_steps=2)
    images = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="input combinations"):
        ij.attribute(images=images)
    with pytest.raises(ValueError, match="input combinations"):
        ij.attribute(images=images, texts=CAPTIONS, texts_b=CAPTIONS)
    with pytest.raises(ValueError, match="same batch size"):
        ij.attribute(images=images, texts=CAPTIONS[:1])
    with pytest.raises(ValueError, match=r"in \[-2, 2\) for the image tower"):
        IntegratedJacobians(enc, image_layer=5).attribute(images=images, texts=CAPTIONS)
    with pytest.raises(ValueError, match="n_steps"):
        IntegratedJacobians(enc, n_steps=0)
    with pytest.raises(ValueError, match="image_reference"):
        IntegratedJacobians(enc, image_reference="noise")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"DualEncoder .* or an open_clip CLIP"):
        IntegratedJacobians(nn.Linear(2, 2))
    assert isinstance(IntegratedJacobians(enc.module).encoder, OpenCLIPDualEncoder)  # wrapped
    with pytest.raises(ValueError, match="spatial size"):
        ij.attribute(images=torch.randn(2, 3, 16, 16), texts=CAPTIONS)
    torch.manual_seed(0)
    resnet = OpenCLIPDualEncoder(tiny_clip(resnet=True))
    with pytest.raises(ValueError, match="Supported: VisionTransformer"):
        IntegratedJacobians(resnet).attribute(images=images, texts=CAPTIONS)
    res = ij.attribute(images=images, texts=CAPTIONS)
    # CAPTIONS[0] "a dog on the grass": SOT, 5 tokens, EOT at 6 (CAPTIONS[1] has EOT at 4)
    with pytest.raises(ValueError, match=r"pair 0, 1 <= start < end <= 6 .*got \[3, 80\]"):
        res.project_span((3, 80))
    with pytest.raises(ValueError, match="1 <= start < end"):
        res.project_span((4, 4))
    with pytest.raises(ValueError, match="position 0 is SOT"):  # over SOT
        res.span_map((0, 2))
    with pytest.raises(ValueError, match=r"pair 1, 1 <= start < end <= 4 \(position 0 is SOT, 4"):
        res.span_map((2, 5))  # over the EOT of the second caption
    with pytest.raises(ValueError, match="padding follows"):  # over padding
        res.span_map(torch.tensor([[1, 3], [8, 10]]))
    with pytest.raises(TypeError, match="integer tensor"):
        res.span_map(torch.tensor([[1.0, 3.0], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="caption"):
        res.project_span((1, 2), side="b")
    with pytest.raises(ValueError, match="inside the 32x32 image"):
        res.project_box(torch.tensor([[0.0, 0.0, 40.0, 10.0], [0.0, 0.0, 8.0, 8.0]]))
    with pytest.raises(ValueError, match="one box per pair"):
        res.project_box(torch.tensor([[0.0, 0.0, 8.0, 8.0]]))
