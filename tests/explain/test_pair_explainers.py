"""Config-table test of the dual-encoder explainer registry and the common PairAttribution views.

Every registered pair explainer must appear in TABLE (equality, not subset), and every entry is
run on the tiny CLIP: common views have the documented shapes, are finite, agree with the
method-specific views they are defined from, and the views a method does not answer raise.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from lico_lightning.explain import (
    FIxLIPAttribution,
    InteractionAttribution,
    M2IBAttribution,
    OpenCLIPDualEncoder,
    PairAttribution,
    PairExplainer,
    create_pair_explainer,
    list_pair_explainers,
)
from lico_lightning.testing import tiny_clip

# name -> tiny settings (several variants where a setting changes which views exist)
TABLE: dict[str, list[dict]] = {
    "fixlip": [
        {"estimator": "exact", "grid": (2, 2)},
        {"budget": 256, "budget_split": (32, 8), "interactions": "cross"},
    ],
    "integrated_jacobians": [{"n_steps": 2}],
    "interaction_cam": [{}],
    "itsm": [{}, {"variant": "hidden"}],
    "m2ib": [
        {"tower": "image", "layer": 0, "steps": 2, "num_copies": 2},
        {"tower": "text", "layer": 0, "steps": 2, "num_copies": 2},
    ],
}
CASES = [(name, kw) for name, variants in TABLE.items() for kw in variants]
CAPTIONS = ["a red dog", "two black cats"]  # three tokens each: EOT at 4
PHRASES = ["dog", "cats"]
BOXES = torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 16.0, 32.0, 32.0]])
ALL_VIEWS = {"span_map", "image_map", "box_scores", "token_scores"}


def test_table_equals_registry() -> None:
    assert set(TABLE) == set(list_pair_explainers())


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return tiny_clip(seed=0)


def images(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize(
    ("name", "kwargs"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)]
)
def test_common_views(model, name: str, kwargs: dict) -> None:
    explainer = create_pair_explainer(name, model, **kwargs)  # the open_clip model is wrapped
    assert isinstance(explainer, PairExplainer)
    enc = explainer.encoder
    assert isinstance(enc, OpenCLIPDualEncoder)
    tokens = enc.tokenize(CAPTIONS)
    att = explainer.attribute(images(), CAPTIONS)
    assert isinstance(att, PairAttribution)
    assert att.views <= ALL_VIEWS and att.views, att.views
    assert att.score.shape == (2,) and bool(torch.isfinite(att.score).all())
    grid = getattr(att, "grid_size", None) or enc.image_spec.grid_size
    s = enc.text_spec.context_length
    spans = torch.tensor([enc.phrase_span(c, p) for c, p in zip(CAPTIONS, PHRASES)])
    eot = enc.eot_positions(tokens)
    content = enc.caption_masks(tokens)[1]
    for view in ALL_VIEWS - att.views:
        with pytest.raises(ValueError, match=view):
            getattr(att, view)(*({"span_map": (spans,), "box_scores": (BOXES,)}.get(view, ())))
    if "span_map" in att.views:
        m = att.span_map(spans)
        assert m.shape == (2, *grid) and bool(torch.isfinite(m).all())
        assert att.upsample(m).shape == (2, 32, 32)
        assert att.upsample(m, mode="nearest").shape == (2, 32, 32)
        # spans are additive: the whole content = sum of single tokens
        whole = att.span_map(torch.stack([torch.ones_like(eot), eot], 1))
        singles = sum(
            att.span_map(torch.stack([torch.full_like(eot, t), torch.full_like(eot, t + 1)], 1))
            for t in range(1, int(eot.min()))
        )
        assert eot.tolist() == [4, 4]
        torch.testing.assert_close(whole, singles)
    if "image_map" in att.views:
        m = att.image_map()
        assert m.shape == (2, *grid) and bool(torch.isfinite(m).all())
        assert att.upsample().shape == (2, 32, 32)
    if "box_scores" in att.views:
        v = att.box_scores(BOXES)
        assert v.shape == (2, s) and bool(torch.isfinite(v).all())
        if isinstance(att, FIxLIPAttribution):  # text players only
            assert not bool(v[~content].any())
    if "token_scores" in att.views:
        v = att.token_scores()
        assert v.shape == (2, s) and bool(torch.isfinite(v).all())


# ----------------------------------------------------------------- views vs rich views
def naive_box_weights(box, grid, size=(32, 32)) -> torch.Tensor:
    hp, wp = grid
    x1, y1, x2, y2 = box
    out = torch.zeros(hp, wp)
    for i in range(hp):
        for j in range(wp):
            cx, cy = (j + 0.5) * size[1] / wp, (i + 0.5) * size[0] / hp
            out[i, j] = float(x1 <= cx <= x2 and y1 <= cy <= y2)
    return out


def test_interaction_views_equal_the_interactions(model) -> None:
    ij = create_pair_explainer("integrated_jacobians", model, n_steps=2)
    att = ij.attribute(images(), CAPTIONS)
    assert isinstance(att, InteractionAttribution)
    inter = att.interactions  # (B, S, Hp, Wp)
    torch.testing.assert_close(att.span_map((2, 3)), inter[:, 2:3].sum(1))
    torch.testing.assert_close(att.image_map(), att.matrix[:, :, 1:].sum(1).reshape(2, 4, 4))
    want = torch.stack(
        [(inter[b] * naive_box_weights(BOXES[b].tolist(), (4, 4))).sum((-1, -2)) for b in range(2)]
    )
    torch.testing.assert_close(att.box_scores(BOXES), want)
    torch.testing.assert_close(att.token_scores(), att.matrix.sum(-1))


def test_fixlip_views_equal_the_banzhaf_terms(model) -> None:
    fx = create_pair_explainer("fixlip", model, estimator="exact", grid=(2, 2))
    att = fx.attribute(images(), ["a red dog", "two cats"])
    ctx = att.to_context(77)  # (B, S, Hp, Wp)
    # "a red dog": players at positions 1..3; "two cats": 1..2
    torch.testing.assert_close(att.span_map((1, 3)), ctx[:, 1:3].sum(1))
    torch.testing.assert_close(
        att.span_map(torch.tensor([[3, 4], [2, 3]]))[0], att.cross_grid()[0, 2]
    )
    img, txt = att.banzhaf_values()
    torch.testing.assert_close(att.image_map(), img.reshape(2, 2, 2))
    torch.testing.assert_close(att.token_scores()[0, 1:4], txt[0, :3])
    torch.testing.assert_close(att.token_scores()[1, 1:3], txt[1, :2])
    assert float(att.token_scores()[:, 0].abs().sum()) == 0.0  # SOT is no player
    cells = torch.stack([naive_box_weights(b.tolist(), (2, 2)).flatten() for b in BOXES])
    want = torch.einsum("btp,bp->bt", att.cross, cells.double())
    got = att.box_scores(BOXES)
    torch.testing.assert_close(got[0, 1:4], want[0, :3])
    torch.testing.assert_close(got[1, 1:3], want[1, :2])
    with pytest.raises(ValueError, match=r"pair 1, 1 <= start < end <= 3"):
        att.span_map((1, 4))  # over the EOT of "two cats"
    with pytest.raises(ValueError, match="position 0 is SOT"):
        att.span_map((0, 1))


def test_m2ib_has_one_map_per_caption(model) -> None:
    m2ib = create_pair_explainer("m2ib", model, layer=0, steps=1, num_copies=1)
    att = m2ib.attribute(images(), CAPTIONS)
    assert isinstance(att, M2IBAttribution)
    assert att.views == {"image_map"}
    torch.testing.assert_close(att.image_map(), att.attribution)
    with pytest.raises(ValueError, match=r"one image map per .*texts=\[phrase\]"):
        att.span_map((1, 2))


# ---------------------------------------------------------------------------- bad input
class CountForwards:
    def __init__(self, model: nn.Module) -> None:
        self.calls = 0
        self.handles = [m.register_forward_pre_hook(self.hook) for m in model.modules()]

    def hook(self, *_args) -> None:
        self.calls += 1


@pytest.mark.parametrize("name", sorted(TABLE))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_images_rejected_before_any_work(model, name: str, bad: float) -> None:
    explainer = create_pair_explainer(name, model, **TABLE[name][0])
    x = images()
    x[1, 0, 3, 4] = bad
    counter = CountForwards(model)
    try:
        with pytest.raises(ValueError, match="Expected `images` to be finite"):
            explainer.attribute(x, CAPTIONS)
    finally:
        for h in counter.handles:
            h.remove()
    assert counter.calls == 0


@pytest.mark.parametrize("name", sorted(TABLE))
def test_not_a_dual_encoder(name: str) -> None:
    with pytest.raises(TypeError, match=r"Expected a DualEncoder .* but got Linear"):
        create_pair_explainer(name, nn.Linear(2, 2), **TABLE[name][0])


def test_registry_errors(model) -> None:
    with pytest.raises(
        ValueError,
        match=r"Expected a pair explainer name, but got 'ij'\. Available: fixlip, integrated",
    ):
        create_pair_explainer("ij", model)
    with pytest.raises(ValueError, match=r"among \[.*'n_steps'.*\], but got 'n_step'"):
        create_pair_explainer("integrated_jacobians", model, n_step=3)


def test_phrase_not_in_caption(model) -> None:
    enc = OpenCLIPDualEncoder(model)
    with pytest.raises(ValueError, match="Expected 'bird' to occur in 'a red dog'"):
        enc.phrase_span("a red dog", "bird")


# ------------------------------------------------------------------------------ README
def test_readme_clip_snippet_runs() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Explain CLIP", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README's CLIP section has no python snippet"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
