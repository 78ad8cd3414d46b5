"""ConceptMonitor on a real SurrogateDistiller run: values, table image, no perturbation."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from tests.modules.test_surrogate_distiller import Data

from lico_lightning.callbacks import ConceptMonitor
from lico_lightning.modules import SurrogateDistiller


def fit(tmp_path, callbacks) -> SurrogateDistiller:
    pl.seed_everything(0)
    model = SurrogateDistiller(block_size=10)
    pl.Trainer(
        max_epochs=2, accelerator="cpu", logger=CSVLogger(tmp_path), enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
        callbacks=callbacks,
    ).fit(model, datamodule=Data())  # fmt: skip
    return model


def test_monitor_logs_concept_weights_and_a_table_without_changing_the_run(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    monitor = ConceptMonitor(k=3, num_probes=5, num_images=4)
    model = fit(tmp_path / "a", [monitor])
    plain = fit(tmp_path / "b", [])
    for key, value in plain.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    data = Data().val_dataloader().dataset
    probes = torch.stack([data[i]["concepts"] for i in monitor.probe_indices])
    weights, bias = model.surrogate.contributions(probes)
    top = weights.abs().topk(3, dim=1).indices
    expected = {
        "concepts/top1_weight": weights.gather(1, top[:, :1]).mean().item(),
        "concepts/topk_weight": weights.gather(1, top).sum(1).mean().item(),
        "concepts/bias_weight": bias.mean().item(),
    }
    for key, value in expected.items():
        assert monitor.last_results[key] == pytest.approx(value, abs=1e-5), key
    pngs = list((tmp_path / "a").rglob("*.png"))
    assert len(pngs) == 2  # one table per epoch


def test_monitor_rejects_a_model_without_explain() -> None:
    with pytest.raises(TypeError, match="explain"):
        ConceptMonitor()._check_model(torch.nn.Linear(2, 2))
