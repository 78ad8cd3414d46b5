"""ITSM against projected tokens from open_clip's own forward_intermediates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lico_lightning.explain import ITSM, OpenCLIPDualEncoder
from lico_lightning.testing import tiny_clip

CAPTIONS = ["a dog on the grass", "a red car"]


@pytest.mark.parametrize(("variant", "index"), [("output", 1), ("hidden", 0)])
@pytest.mark.parametrize("normalize", [True, False])
def test_matches_projected_intermediates(variant: str, index: int, normalize: bool) -> None:
    torch.manual_seed(0)  # the test's random inputs
    model = tiny_clip()
    enc = OpenCLIPDualEncoder(model)
    images = torch.randn(2, 3, 32, 32)
    tokens = enc.tokenize(CAPTIONS)
    res = ITSM(enc, variant=variant, normalize=normalize).attribute(images=images, texts=tokens)
    with torch.no_grad():
        out = model.forward_intermediates(
            image=images,
            text=tokens,
            image_indices=[index],
            text_indices=[index],
            normalize_intermediates=True,
            image_output_fmt="NLC",
        )
        zi = out["image_intermediates"][0] @ model.visual.proj  # (B, P, K) patches only
        zt = out["text_intermediates"][0] @ model.text_projection  # (B, S, K)
        if normalize:
            zi, zt = F.normalize(zi, dim=-1), F.normalize(zt, dim=-1)
        want = model.logit_scale.exp() * torch.einsum("bsk,bpk->bsp", zt, zi)
        eot = tokens.argmax(-1)
        for b in range(2):
            want[b, eot[b] + 1 :] = 0.0
        score = enc.similarity(enc.encode_image(images), enc.encode_text(tokens))
    torch.testing.assert_close(res.interactions.flatten(2), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.score, score)
    assert res.reference_scores is None
    assert res.method == f"itsm_{variant}"
    with pytest.raises(ValueError, match="reference terms"):
        res.completeness_residual()


def test_all_pairs_and_errors() -> None:
    torch.manual_seed(0)
    enc = OpenCLIPDualEncoder(tiny_clip())
    images = torch.randn(2, 3, 32, 32)
    itsm = ITSM(enc)
    allp = itsm.attribute(images=images, texts=CAPTIONS, all_pairs=True)
    one = itsm.attribute(images=images[1:], texts=CAPTIONS[:1])
    torch.testing.assert_close(allp.matrix[0, 1], one.matrix[0])
    with pytest.raises(ValueError, match="variant"):
        ITSM(enc, variant="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="for the text tower"):
        ITSM(enc, variant="hidden", text_layer=9).attribute(images=images, texts=CAPTIONS)
    torch.manual_seed(0)
    pooled = OpenCLIPDualEncoder(
        tiny_clip(vision_cfg={"attentional_pool": True, "attn_pooler_heads": 2})
    )
    with pytest.raises(ValueError, match="attentional pooling"):
        ITSM(pooled).attribute(images=images, texts=CAPTIONS)
