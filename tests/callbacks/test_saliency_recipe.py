"""The digits recipe carries the SaliencyMonitor; a LICOClassifier checkpoint is evaluated with
the Table 1 protocol through ``trainer.test`` and through ``evaluate_saliency``."""

from __future__ import annotations

from pathlib import Path

import pytest

from lico_lightning.callbacks import SaliencyMonitor
from lico_lightning.cli import build_cli
from lico_lightning.explain import evaluate_saliency
from lico_lightning.modules import LICOClassifier

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "lico_digits.yaml"
KEYS = {f"gradcam/{m}" for m in ("insertion", "deletion", "overall")}


@pytest.mark.slow
def test_digits_recipe_monitor_and_checkpoint_evaluation(tmp_path):
    cli = build_cli(
        [
            "--config",
            str(RECIPE),
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.limit_test_batches=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--data.init_args.batch_size=4",
        ],
        run=False,
    )
    monitors = [c for c in cli.trainer.callbacks if isinstance(c, SaliencyMonitor)]
    assert len(monitors) == 1
    monitor = monitors[0]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert {f"saliency/{k}" for k in KEYS} <= set(cli.trainer.callback_metrics)
    assert list(Path(cli.trainer.logger.log_dir, "saliency").glob("*.png"))

    ckpt = cli.trainer.checkpoint_callback.last_model_path
    # weights_only=False: LICOClassifier stores numpy RNG states in its checkpoints
    returned = cli.trainer.test(
        cli.model, datamodule=cli.datamodule, ckpt_path=ckpt, weights_only=False
    )[0]
    assert {f"test/saliency/{k}" for k in KEYS} <= set(returned)

    model = LICOClassifier.load_from_checkpoint(ckpt, weights_only=False)
    direct = evaluate_saliency(
        model,
        cli.datamodule.test_dataloader(),
        ["gradcam"],
        sorted(m.split("/")[1] for m in KEYS),
        max_batches=1,
        progress=False,
    )
    assert set(direct) == KEYS
    for key, value in direct.items():
        assert returned[f"test/saliency/{key}"] == pytest.approx(value, abs=1e-5)
        assert monitor.test_results[f"test/saliency/{key}"] == pytest.approx(value, abs=1e-5)
