"""The plain-loop example: the monitor leaves the loop bitwise unchanged, and what it logged
equals ``evaluate_saliency`` on the same probes and the saved checkpoint."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tests.examples._reference import digits_reference

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plain_loop_saliency.py"
TINY = ["--steps", "4", "--every", "2", "--batch-size", "8", "--image-size", "16"]
TINY += ["--num-probes", "5", "--num-images", "2"]


def _example():
    spec = importlib.util.spec_from_file_location("plain_loop_saliency", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_loop_monitor_changes_nothing_and_logs_evaluate_saliency_values(tmp_path):
    example = _example()
    plain = example.main([*TINY, "--no-monitor", "--out", str(tmp_path / "plain")])
    watched = example.main([*TINY, "--out", str(tmp_path / "watched")])

    # bitwise: parameters, BN buffers, and the optimizer's momentum buffers
    a, b = torch.load(plain["checkpoint"]), torch.load(watched["checkpoint"])
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])

    # the schedule fired at steps 2 and 4, the values went to the returned history and the file
    history = watched["history"]
    assert [step for step, _ in history] == [2, 4]
    assert json.loads((tmp_path / "watched" / "metrics.json").read_text())[-1][1] == history[-1][1]
    assert len(list((tmp_path / "watched" / "saliency").glob("*.png"))) == 2

    # the last run saw the final weights: recompute from the checkpoint, independently
    state = b["monitor"]
    assert state["last_step"] == 4 and state["num_runs"] == 2
    model = example.make_model()
    model.load_state_dict(b["model"])
    expected = digits_reference(model, state["probe_indices"], image_size=16)
    logged = history[-1][1]
    assert set(logged) == set(expected)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, abs=1e-6), key


def test_plain_loop_logs_to_a_summary_writer(tmp_path):
    pytest.importorskip("tensorboard")
    example = _example()
    example.main([*TINY, "--tensorboard", "--out", str(tmp_path)])
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(tmp_path.rglob("*.png"))  # the writer took the images
