"""``last.ckpt`` of a CLI run is the end of the last finished epoch even when the monitored
metric never improves (issue 18 point 14)."""

from __future__ import annotations

from pathlib import Path

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
    # the monitored callback still keeps its best file (the first epoch: later ones tie)
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert torch.load(best, weights_only=False)["global_step"] == 4
    weights = cli.trainer.lightning_module.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in last["state_dict"].items())


def test_an_unreadable_ckpt_path_is_named(tmp_path: Path) -> None:
    """LightningCLI reads --ckpt_path's hyperparameters before any hook; an empty file is a
    clear error naming it, not a bare EOFError (issue 18 point 3, the CLIs)."""
    import pytest

    empty = tmp_path / "last.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"Expected .*last\.ckpt to hold a Lightning checkpoint"):
        BaseCLI(
            ConstantMetricModel,
            BoringDataModule,
            args=["validate", "--trainer.logger=false", f"--ckpt_path={empty}"],
        )
