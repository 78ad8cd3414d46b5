"""The digits recipe carries the SaliencyMonitor; a LICOClassifier checkpoint is evaluated with
the Table 1 protocol by ``lico-lightning test --config ... --ckpt_path ...`` and by
``evaluate_saliency``, with the same numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from lico_lightning.callbacks import SaliencyMonitor
from lico_lightning.cli import build_cli
from lico_lightning.evaluation import evaluate_saliency
from lico_lightning.modules import LICOClassifier

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "lico_digits.yaml"
KEYS = {f"gradcam/{m}" for m in ("insertion", "deletion", "overall")} | {"confidence"}


@pytest.mark.slow
def test_digits_recipe_monitor_and_checkpoint_evaluation(tmp_path):
    common = [
        f"--config={RECIPE}",
        "--trainer.limit_test_batches=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--data.init_args.batch_size=4",
    ]
    fit = build_cli(
        [
            "fit",
            *common,
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
        ]
    )
    monitors = [c for c in fit.trainer.callbacks if isinstance(c, SaliencyMonitor)]
    assert len(monitors) == 1 and monitors[0].num_runs == 1
    assert {f"saliency/{k}" for k in KEYS} <= set(fit.trainer.callback_metrics)
    assert list(Path(fit.trainer.logger.log_dir, "saliency").glob("*.png"))

    ckpt = fit.trainer.checkpoint_callback.last_model_path
    test = build_cli(["test", *common, f"--ckpt_path={ckpt}"])
    logged = {
        k: float(v)
        for k, v in test.trainer.callback_metrics.items()
        if k.startswith("test/saliency/")
    }
    assert set(logged) == {f"test/saliency/{k}{se}" for k in KEYS for se in ("", "_se")}

    model = LICOClassifier.load_from_checkpoint(ckpt)
    direct = evaluate_saliency(
        model,
        test.datamodule.test_dataloader(),
        ["gradcam"],
        ["insertion", "deletion", "overall"],
        max_batches=1,
        progress=False,
        model_metrics=["confidence"],
        standard_errors=True,
    )  # default options = the paper's protocol (3.6 % steps), as the monitor's test stage
    for key, value in direct.items():
        assert logged[f"test/saliency/{key}"] == pytest.approx(value, abs=1e-5)
