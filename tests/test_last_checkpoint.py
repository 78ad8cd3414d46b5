"""``last.ckpt`` of a CLI run is the end of the last finished epoch even when the monitored
metric never improves (issue 18 point 14)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pytorch_lightning.demos.boring_classes import BoringDataModule, BoringModel

from lico_lightning.cli import BaseCLI


class ConstantMetricModel(BoringModel):
    """Logs ``val/R@1`` = 0.5 at every validation: the metric ties every epoch."""

    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        self.log("val/R@1", 0.5)
        return out


def test_last_ckpt_is_the_last_epoch_when_the_monitored_metric_ties(tmp_path: Path) -> None:
    cli = BaseCLI(
        ConstantMetricModel,
        BoringDataModule,
        args=[
            "fit",
            "--trainer.max_epochs=3",
            "--trainer.limit_train_batches=4",
            "--trainer.limit_val_batches=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.callbacks+=ModelCheckpoint",
            f"--trainer.callbacks.dirpath={tmp_path / 'checkpoints'}",
            "--trainer.callbacks.monitor=val/R@1",
            "--trainer.callbacks.mode=max",
            "--trainer.callbacks.save_last=true",
        ],
    )
    assert cli.trainer.global_step == 12
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "last.ckpt" in files and not any(n.startswith("last-v") for n in files)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 12)
    # what users read to find it still points at it
    assert Path(cli.trainer.checkpoint_callback.last_model_path).name == "last.ckpt"
    # the monitored callback still keeps its best file (the first epoch: later ones tie)
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert torch.load(best, weights_only=False)["global_step"] == 4
    weights = cli.trainer.lightning_module.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in last["state_dict"].items())


def test_an_unreadable_ckpt_path_is_named(tmp_path: Path) -> None:
    """LightningCLI reads --ckpt_path's hyperparameters before any hook; an empty file is a
    clear error naming it, not a bare EOFError (issue 18 point 3, the CLIs)."""
    empty = tmp_path / "last.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"Expected .*last\.ckpt to hold a Lightning checkpoint"):
        BaseCLI(
            ConstantMetricModel,
            BoringDataModule,
            args=["validate", "--trainer.logger=false", f"--ckpt_path={empty}"],
        )


RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clip_shapes.yaml"
TINY_CLIP_RUN = [
    f"--config={RECIPE}",
    "--trainer.max_epochs=3",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--data.init_args.num_train=64",
    "--data.init_args.num_val=16",
    "--data.init_args.num_test=8",
    "--data.init_args.batch_size=8",
]


def _lico_clip(args: list[str], cwd: Path, **kwargs):
    import subprocess
    import sys

    command = [sys.executable, "-c", "from lico_lightning.cli import clip_main; clip_main()"]
    return subprocess.Popen([*command, *args], cwd=cwd, **kwargs)


def _newest_last(cwd: Path) -> Path:
    found = sorted(cwd.glob("outputs/clip_shapes/version_*/checkpoints/last.ckpt"))
    return max(found, key=lambda p: p.stat().st_mtime_ns)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_from_last_ckpt_ends_bitwise_equal(tmp_path: Path) -> None:
    """Issue 18: a run killed with SIGKILL after its first epoch and resumed from last.ckpt
    (whole, by the atomic writer; the end of the last finished epoch) ends with the weights and
    optimizer state of the run that was never interrupted."""
    import signal
    import subprocess
    import time

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    killed.mkdir()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    assert _lico_clip(["fit", *TINY_CLIP_RUN], whole, **quiet).wait(timeout=600) == 0
    run = _lico_clip(["fit", *TINY_CLIP_RUN], killed, **quiet)
    deadline = time.monotonic() + 600
    while not list(killed.glob("outputs/clip_shapes/version_0/checkpoints/last.ckpt")):
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before a kill"
        time.sleep(0.05)
    time.sleep(0.5)  # into the next epoch
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    stopped = torch.load(_newest_last(killed), map_location="cpu", weights_only=True)
    assert stopped["epoch"] < 2  # it was stopped before the end
    resume = ["fit", *TINY_CLIP_RUN, f"--ckpt_path={_newest_last(killed)}"]
    assert _lico_clip(resume, killed, **quiet).wait(timeout=600) == 0
    a = torch.load(_newest_last(whole), map_location="cpu", weights_only=True)
    b = torch.load(_newest_last(killed), map_location="cpu", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    states_a, states_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert states_a and states_a.keys() == states_b.keys()  # zip alone would pass on empty/short
    for sa, sb in zip(states_a.values(), states_b.values()):
        assert sa.keys() == sb.keys()
        for name in sa:
            assert torch.equal(sa[name], sb[name]), name
