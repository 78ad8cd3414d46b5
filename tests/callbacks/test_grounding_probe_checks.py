"""GroundingMonitor probes: restored keys beyond a smaller validation set are drawn again
(issue 18 point 8), boxes smaller than one patch are left out with a count (point 12)."""

from __future__ import annotations

import warnings

import pytest
import torch

from lico_lightning.callbacks import GroundingMonitor, GroundingProbes
from lico_lightning.data import ShapesCaptionDataModule
from lico_lightning.explain import as_dual_encoder
from lico_lightning.testing import tiny_clip


def _dataset(num_val: int):
    dm = ShapesCaptionDataModule(
        model_cfg=_cfg(),
        num_train=4,
        num_val=num_val,
        num_test=2,
        batch_size=4,
        seed=0,
    )
    dm.setup("validate")
    return dm.val_dataset


def _cfg():
    from lico_lightning.text import tiny_openclip_config

    cfg = tiny_openclip_config(context_length=16)
    cfg["vision_cfg"].update(patch_size=8, layers=2)
    return cfg


def _monitor(**kw) -> GroundingMonitor:
    return GroundingMonitor(
        methods=["interaction_cam"],
        metrics=["pga"],
        every_n_train_steps=1,
        log_images=False,
        **kw,
    )


def _steps(monitor: GroundingMonitor, n: int) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1, n + 1):
            monitor.step(step)
    return [str(w.message) for w in caught]


def test_restored_probe_keys_beyond_a_smaller_split_are_drawn_again() -> None:
    import open_clip

    model = open_clip.CLIP(**_cfg())
    large, small = _dataset(12), _dataset(3)
    first = _monitor(num_probes=8)
    first.attach(model, large)
    _steps(first, 1)
    assert max(pair for pair, _ in first.probe_indices) >= len(small.pairs)
    resumed = _monitor(num_probes=8)
    resumed.load_state_dict(first.state_dict())
    resumed.attach(model, small)
    messages = _steps(resumed, 3)
    assert not any("IndexError" in m or "failed" in m for m in messages), messages
    assert sum("drawing 8 probes again" in m for m in messages) == 1
    assert all(pair < len(small.pairs) for pair, _ in resumed.probe_indices)
    assert resumed.last_results  # the runs explained the redrawn probes


def test_boxes_smaller_than_one_patch_are_left_out_with_a_count() -> None:
    model = tiny_clip()  # 32 px images, 8 px patches: a 4x4 grid
    boxes = torch.tensor(
        [
            [0.0, 0.0, 16.0, 16.0],
            [5.0, 5.0, 11.0, 11.0],
            [0.0, 0.0, 32.0, 3.0],
            [8.0, 8.0, 30.0, 31.0],
        ]
    )
    probes = GroundingProbes(
        torch.randn(4, 3, 32, 32), ["a red circle"] * 4, ["red circle"] * 4, boxes
    )
    # reference: patch centres (k + 1/2) * patch along each axis, a centre on an edge inside
    ph, pw = as_dual_encoder(model).image_spec.patch_size
    xs, ys = [(k + 0.5) * pw for k in range(32 // pw)], [(k + 0.5) * ph for k in range(32 // ph)]
    expected = [
        i
        for i, (x1, y1, x2, y2) in enumerate(boxes.tolist())
        if any(x1 <= x <= x2 for x in xs) and any(y1 <= y <= y2 for y in ys)
    ]
    monitor = _monitor(probes=probes)
    with pytest.warns(
        UserWarning, match=r"2 of 4 probes have a box smaller than one patch, 8 x 8 px"
    ):
        monitor.attach(model)
    kept = monitor._given
    assert isinstance(kept, GroundingProbes) and len(kept) == len(expected) == 2
    assert torch.equal(kept.boxes, boxes[expected])
    assert kept.spans is not None and kept.spans.shape == (2, 2)
    tiny = GroundingProbes(torch.randn(1, 3, 32, 32), ["a dog"], ["dog"], boxes[1:2])
    with pytest.raises(ValueError, match="Expected probe boxes that contain a patch centre"):
        _monitor(probes=tiny).attach(model)


def test_num_probes_larger_than_the_data_is_a_warning() -> None:
    import open_clip

    model = open_clip.CLIP(**_cfg())
    data = _dataset(3)
    monitor = _monitor(num_probes=10)
    monitor.attach(model, data)
    messages = _steps(monitor, 1)
    drawn = len(monitor.probe_indices)
    assert drawn < 10
    assert any(f"num_probes=10 probes, but the dataset gives {drawn}" in m for m in messages)
