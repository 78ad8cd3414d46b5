"""Overlay figures (lico_lightning.viz): large labelled tiles, boxes, a colour bar, clear errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from lico_lightning.viz import render_overlays, save_png, to_display


def _inputs(batch: int = 2, size: int = 8):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=g)
    maps = {"gradcam": torch.rand(batch, size, size, generator=g)}
    return images, maps


def test_tiles_are_large_and_the_figure_has_a_jet_colour_bar():
    images, maps = _inputs()
    maps["rise"] = maps["gradcam"].flip(-1)
    grid = render_overlays(images, maps, tile_size=128)
    channels, height, width = grid.shape
    assert channels == 3 and height >= 2 * 128 and width >= 3 * 128
    assert grid.min() >= 0 and grid.max() <= 1
    right = grid[:, :, int(0.8 * width) :].permute(1, 2, 0).reshape(-1, 3)
    # jet's ends, dark red (0.5, 0, 0) and dark blue (0, 0, 0.5), appear only in the bar there
    for colour in ([0.5, 0.0, 0.0], [0.0, 0.0, 0.5]):
        assert ((right - torch.tensor(colour)).abs().amax(1) < 0.06).any(), colour


def test_a_note_adds_its_lines_under_the_title_and_keeps_the_tiles():
    images, maps = _inputs()
    plain = render_overlays(images, maps, title="step 2")
    noted = render_overlays(
        images, maps, title="step 2", note="gradcam: insertion 0.500 ± 0.100\n(6 probes)"
    )
    assert noted.shape[2] == plain.shape[2] and noted.shape[1] > plain.shape[1]
    extra = noted.shape[1] - plain.shape[1]
    # the tiles are the same pixels, moved down by the note's height
    assert torch.allclose(noted[:, extra + 60 :, :], plain[:, 60:, :], atol=0.02)
    assert (noted[:, 30 : extra + 30, :] < 0.5).any()  # dark text where the note is


def test_boxes_are_drawn_on_their_own_row_only():
    images, maps = _inputs()
    plain = render_overlays(images, maps)
    boxed = render_overlays(
        images, maps, boxes=[torch.tensor([[1.0, 1.0, 6.0, 6.0]]), torch.zeros(0, 4)]
    )
    changed = (plain - boxed).abs().amax(0) > 0.05
    rows = changed.any(1).nonzero().flatten()
    assert rows.numel() > 0
    assert rows.max() < plain.shape[1] / 2  # the first image's row, not the second's


def test_labels_scores_and_class_names_are_written():
    images, maps = _inputs()
    bare = render_overlays(images, maps)
    labels, preds, probs = torch.tensor([1, 2]), torch.tensor([1, 0]), torch.tensor([0.9, 0.4])
    labelled = render_overlays(images, maps, labels=labels, predictions=preds, probabilities=probs)
    named = render_overlays(
        images,
        maps,
        labels=labels,
        predictions=preds,
        probabilities=probs,
        class_names=["zero", "one", "two"],
    )
    scored = render_overlays(
        images, maps, scores={"gradcam": {"ins": torch.tensor([0.8, 0.1]), "del": torch.rand(2)}}
    )
    for other in (labelled, named, scored):
        assert other.shape == bare.shape and not torch.equal(other, bare)
    assert not torch.equal(labelled, named)


def test_bad_inputs_are_rejected_before_drawing():
    images, maps = _inputs()
    with pytest.raises(ValueError, match=r"saliency\['gradcam'\]"):
        render_overlays(images, {"gradcam": torch.rand(2, 7, 8)})
    with pytest.raises(ValueError, match="finite"):
        render_overlays(images, {"gradcam": torch.full((2, 8, 8), float("nan"))})
    with pytest.raises(ValueError, match="tile_size"):
        render_overlays(images, maps, tile_size=64)
    with pytest.raises(ValueError, match="cmap"):
        render_overlays(images, maps, cmap="jett")
    with pytest.raises(ValueError, match="boxes"):
        render_overlays(images, maps, boxes=[torch.zeros(0, 4)])
    with pytest.raises(ValueError, match="labels"):
        render_overlays(images, maps, labels=torch.tensor([1]))
    with pytest.raises(ValueError, match="at least one"):
        render_overlays(images, {})


def test_missing_matplotlib_names_the_extra(monkeypatch):
    images, maps = _inputs()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"lico-lightning\[viz\]"):
        render_overlays(images, maps)


def test_to_display_inverts_the_normalisation_and_save_png_round_trips(tmp_path):
    from PIL import Image

    x = torch.rand(1, 3, 4, 5)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(to_display(normalised, mean, std), x, atol=1e-6)
    path = save_png(x[0], tmp_path / "a" / "b.png")
    back = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1) / 255
    assert (back - x[0]).abs().max() <= 0.5 / 255 + 1e-6
