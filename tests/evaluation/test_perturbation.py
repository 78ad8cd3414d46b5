"""Conditional insertion / deletion curves against step-by-step naive perturbation."""

from __future__ import annotations

import pytest
import torch

from lico_lightning.evaluation import conditional_perturbation_curves
from lico_lightning.explain import IntegratedJacobians, OpenCLIPDualEncoder
from lico_lightning.testing import tiny_clip

CAPTIONS = ["a dog on the grass", "a red car"]


@pytest.fixture
def enc() -> OpenCLIPDualEncoder:
    torch.manual_seed(0)  # the tests' random inputs
    return OpenCLIPDualEncoder(tiny_clip())


def test_image_deletion_and_insertion_match_loop(enc) -> None:
    images = torch.randn(2, 3, 32, 32)
    tokens = enc.tokenize(CAPTIONS)
    attr = torch.randn(2, 4, 4)
    dele = conditional_perturbation_curves(enc, images, tokens, attr, "image", "deletion")
    ins = conditional_perturbation_curves(
        enc, images, tokens, attr, "image", "insertion", batch_size=5
    )
    assert dele.shape == ins.shape == (2, 17)
    with torch.no_grad():
        et = enc.encode_text(tokens)
        for b in range(2):
            order = attr[b].flatten().argsort(descending=True).tolist()
            for k in range(17):
                gone = torch.zeros_like(images[b])
                kept = torch.zeros_like(images[b])
                for rank, p in enumerate(order):
                    i, j = divmod(p, 4)
                    cell = (slice(None), slice(8 * i, 8 * i + 8), slice(8 * j, 8 * j + 8))
                    if rank >= k:
                        gone[cell] = images[b][cell]
                    else:
                        kept[cell] = images[b][cell]
                want_del = enc.similarity(enc.encode_image(gone[None]), et[b : b + 1])
                want_ins = enc.similarity(enc.encode_image(kept[None]), et[b : b + 1])
                torch.testing.assert_close(dele[b, k], want_del[0], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(ins[b, k], want_ins[0], rtol=1e-5, atol=1e-5)
        full = enc.similarity(enc.encode_image(images), et)
    torch.testing.assert_close(dele[:, 0], full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ins[:, -1], full, rtol=1e-5, atol=1e-5)


def test_text_deletion_matches_loop(enc) -> None:
    images = torch.randn(2, 3, 32, 32)
    tokens = enc.tokenize(CAPTIONS)
    attr = torch.randn(2, 77)
    curves = conditional_perturbation_curves(enc, images, tokens, attr, "text", "deletion", 2)
    eot = enc.eot_positions(tokens)
    with torch.no_grad():
        ei = enc.encode_image(images)
        for b in range(2):
            content = list(range(1, int(eot[b])))
            order = sorted(content, key=lambda p: -float(attr[b, p]))
            n = len(content)
            for j in range(3):
                k = int(j * n / 2 + 0.5)
                mask = torch.ones(1, 77, dtype=torch.bool)
                mask[0, order[:k]] = False
                want = enc.similarity(ei[b : b + 1], enc.encode_text(tokens[b : b + 1], mask))
                torch.testing.assert_close(curves[b, j], want[0], rtol=1e-5, atol=1e-5)


def test_with_integrated_jacobians_marginals(enc) -> None:
    images = torch.randn(2, 3, 32, 32)
    res = IntegratedJacobians(enc, n_steps=2).attribute(images=images, texts=CAPTIONS)
    assert res.marginal("b").shape == (2, 4, 4)
    assert res.marginal("a").shape == (2, 77)
    torch.testing.assert_close(res.marginal("b"), res.interactions.sum(1))
    torch.testing.assert_close(res.marginal("a"), res.matrix.sum(-1))
    curves = conditional_perturbation_curves(
        enc, images, CAPTIONS, res.marginal("a"), "text", "insertion"
    )
    assert torch.isfinite(curves).all()


def test_errors(enc) -> None:
    images = torch.randn(2, 3, 32, 32)
    tokens = enc.tokenize(CAPTIONS)
    with pytest.raises(ValueError, match="same batch size"):
        conditional_perturbation_curves(
            enc, images, tokens[:1], torch.rand(2, 4, 4), "image", "deletion"
        )
    with pytest.raises(ValueError, match=r"shape \(2, h, w\)"):
        conditional_perturbation_curves(enc, images, tokens, torch.rand(2, 16), "image", "deletion")
    with pytest.raises(ValueError, match="multiple of the attribution grid"):
        conditional_perturbation_curves(
            enc, images, tokens, torch.rand(2, 5, 5), "image", "deletion"
        )
    with pytest.raises(ValueError, match=r"shape \(2, 77\)"):
        conditional_perturbation_curves(enc, images, tokens, torch.rand(2, 7), "text", "deletion")
    with pytest.raises(ValueError, match="modality"):
        conditional_perturbation_curves(
            enc,
            images,
            tokens,
            torch.rand(2, 77),
            "audio",
            "deletion",  # type: ignore[arg-type]
        )


def test_non_finite_inputs_and_models_rejected(enc) -> None:
    images = torch.randn(2, 3, 32, 32)
    tokens = enc.tokenize(CAPTIONS)
    bad = images.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="`images` to be finite"):
        conditional_perturbation_curves(enc, bad, tokens, torch.rand(2, 4, 4), "image", "deletion")
    attr = torch.rand(2, 4, 4)
    attr[1, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="`attributions` to be finite"):
        conditional_perturbation_curves(enc, images, tokens, attr, "image", "deletion")
    with pytest.raises(TypeError, match="batch_size"):
        conditional_perturbation_curves(
            enc, images, tokens, torch.rand(2, 4, 4), "image", "deletion", batch_size=2.0
        )
    with pytest.raises(TypeError, match="DualEncoder"):
        conditional_perturbation_curves(
            torch.nn.Linear(2, 2), images, tokens, torch.rand(2, 4, 4), "image", "deletion"
        )
    # an open_clip model is wrapped
    attr = attr.clamp_max(1.0)
    want = conditional_perturbation_curves(enc, images, tokens, attr, "image", "deletion")
    got = conditional_perturbation_curves(enc.module, images, tokens, attr, "image", "deletion")
    torch.testing.assert_close(got, want)
