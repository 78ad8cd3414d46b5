"""The Fabric example: the monitor attached with `fabric=`; a 2-process (gloo) run logs the values
a single process computes on the same weights and probes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.examples._reference import digits_reference

from lico_lightning.callbacks import SaliencyMonitor
from lico_lightning.data import DigitsDataModule

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fabric_saliency.py"
TINY = ["--steps", "4", "--every", "2", "--batch-size", "4", "--image-size", "16"]
TINY += ["--num-probes", "7", "--num-images", "2"]  # 7 probes: shards of 4 and 3


def _example():
    spec = importlib.util.spec_from_file_location("fabric_saliency", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _single_process_values(example, checkpoint: Path) -> tuple[dict, dict, dict]:
    """The checkpoint, evaluate_saliency on its probes, and the monitor in one process."""
    state = torch.load(checkpoint, weights_only=False)
    model = example.make_model()
    model.load_state_dict(state["model"])
    reference = digits_reference(model, state["monitor"]["probe_indices"], image_size=16)
    data = DigitsDataModule(image_size=16, batch_size=4, seed=0)
    data.setup("fit")
    monitor = SaliencyMonitor(
        metrics=["insertion", "deletion", "overall"],  # the example's
        every_n_train_steps=2,
        num_probes=7,
        log_images=False,
    )
    monitor.load_state_dict({**state["monitor"], "last_step": -1})
    monitor.attach(model, data.val_dataset)
    return state, reference, monitor.step(state["step"])


def test_fabric_single_process_run(tmp_path):
    example = _example()
    result = example.main([*TINY, "--out", str(tmp_path)])
    assert [s for s, _ in result["history"]] == [2, 4]
    assert len(list(Path(result["log_dir"], "saliency").glob("*.png"))) == 2
    header = Path(result["log_dir"], "metrics.csv").read_text().splitlines()[0]
    assert "saliency/gradcam/overall" in header
    _, reference, _ = _single_process_values(example, result["checkpoint"])
    for key, value in reference.items():
        assert result["history"][-1][1][key] == pytest.approx(value, abs=1e-6)


@pytest.mark.distributed
def test_two_process_fabric_run_logs_the_single_process_values(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    env["OMP_NUM_THREADS"] = "1"
    subprocess.run(
        [sys.executable, str(EXAMPLE), "--devices", "2", *TINY, "--out", str(tmp_path)],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
        capture_output=True,
    )
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert [s for s, _ in history] == [2, 4]
    logged = history[-1][1]
    state, reference, single = _single_process_values(_example(), tmp_path / "checkpoint.pt")
    assert state["step"] == 4 and len(state["monitor"]["probe_indices"]) == 7
    assert set(logged) == set(reference) == set(single)
    for key, value in reference.items():
        assert logged[key] == pytest.approx(value, abs=1e-6), key
        assert single[key] == pytest.approx(value, abs=1e-6), key
    pngs = list(tmp_path.rglob("*.png"))
    assert len(pngs) == 2 and all("version_0" in p.parts for p in pngs)  # rank 0 only
