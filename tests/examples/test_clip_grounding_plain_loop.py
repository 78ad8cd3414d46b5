"""The CLIP grounding plain-loop example: the monitor leaves the loop bitwise unchanged, and
what it logged equals the explainer + metric functions on its probes and the saved weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import open_clip
import pytest
import torch

from lico_lightning.data import ShapesCaptionDataModule
from lico_lightning.explain import OpenCLIPDualEncoder, create_pair_explainer
from lico_lightning.functional import energy_pointing_game, pointing_game

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "clip_grounding_plain_loop.py"
TINY = ["--steps", "4", "--every", "2", "--batch-size", "8", "--num-train", "16"]
TINY += ["--width", "32", "--image-size", "32", "--methods", "interaction_cam"]
TINY += ["--num-probes", "3", "--num-images", "2"]


def _example():
    spec = importlib.util.spec_from_file_location("clip_grounding_plain_loop", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_clip_loop_is_unchanged_and_logs_the_direct_values(tmp_path):
    example = _example()
    plain = example.main([*TINY, "--no-monitor", "--out", str(tmp_path / "plain")])
    watched = example.main([*TINY, "--out", str(tmp_path / "watched")])

    a, b = torch.load(plain["checkpoint"]), torch.load(watched["checkpoint"])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(
            sa["exp_avg_sq"], sb["exp_avg_sq"]
        )

    history = watched["history"]
    assert [step for step, _ in history] == [2, 4]
    assert len(list((tmp_path / "watched" / "grounding").glob("*.png"))) == 2

    # recompute the last run from the checkpoint and the probe (pair, phrase) indices it saved
    state = b["monitor"]
    assert state["last_step"] == 4 and len(state["probe_indices"]) == 3
    cfg = example.model_config(32, 2, 32)
    data = ShapesCaptionDataModule(model_cfg=cfg, num_train=16, num_val=200, num_test=8, seed=0)
    data.setup("fit")
    probes = [data.val_dataset.probe(p, k) for p, k in state["probe_indices"]]
    model = open_clip.CLIP(**cfg)
    model.load_state_dict(b["model"])
    model.eval()
    enc = OpenCLIPDualEncoder(model)
    images = torch.stack([p.image for p in probes])
    boxes = torch.stack([p.box for p in probes])
    distractors = torch.stack([p.distractor_box for p in probes])
    spans = torch.tensor([p.token_span for p in probes])
    result = create_pair_explainer("interaction_cam", enc).attribute(
        images, enc.tokenize([p.caption for p in probes])
    )
    maps = result.span_map(spans)
    energy = energy_pointing_game(maps, boxes, image_size=(32, 32), reduction="none")
    expected = {
        "pga": pointing_game(maps, boxes, tolerance=0.0, image_size=(32, 32)),
        "pge": energy.mean(),
        "mpge": energy.sort().values[1],
        "pga_distractor": pointing_game(maps, distractors, tolerance=0.0, image_size=(32, 32)),
        "pge_distractor": energy_pointing_game(maps, distractors, image_size=(32, 32)),
    }
    per_probe = {  # each mean's standard error, std(ddof=1) / sqrt(n), by the monitor's default
        "pga": pointing_game(maps, boxes, tolerance=0.0, image_size=(32, 32), reduction="none"),
        "pge": energy,
        "pga_distractor": pointing_game(
            maps, distractors, tolerance=0.0, image_size=(32, 32), reduction="none"
        ),
        "pge_distractor": energy_pointing_game(
            maps, distractors, image_size=(32, 32), reduction="none"
        ),
    }  # mPGE is a median: no standard error
    last = history[-1][1]
    assert set(last) == {f"grounding/interaction_cam/{k}" for k in expected} | {
        f"grounding/interaction_cam/{k}_se" for k in per_probe
    }
    for name, value in expected.items():
        assert last[f"grounding/interaction_cam/{name}"] == pytest.approx(float(value), abs=1e-5)
    for name, values in per_probe.items():
        se = values.double().std() / len(values) ** 0.5
        assert last[f"grounding/interaction_cam/{name}_se"] == pytest.approx(float(se), abs=1e-5)
