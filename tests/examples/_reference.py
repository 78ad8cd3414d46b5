"""Recompute a monitor's last values independently: its drawn digits probes, evaluate_saliency."""

from __future__ import annotations

import torch
from torch import nn

from lico_lightning.data import DigitsDataModule
from lico_lightning.evaluation import evaluate_saliency
from lico_lightning.metrics import SaliencyMetricOptions


def digits_reference(
    model: nn.Module, probe_indices: list[int], image_size: int
) -> dict[str, float]:
    """``evaluate_saliency`` (Grad-CAM, insertion/deletion/overall at the monitor's 0.1 step) on
    the validation digits the monitor says it drew, keyed like the monitor's logs."""
    data = DigitsDataModule(image_size=image_size, batch_size=8, seed=0)
    data.setup("fit")
    probe = [data.val_dataset[i] for i in probe_indices]
    batch = (
        torch.stack([x for x, _ in probe]),
        torch.stack([torch.as_tensor(y) for _, y in probe]),
    )
    values = evaluate_saliency(
        model.eval(),
        [batch],
        ["gradcam"],
        ["insertion", "deletion", "overall"],
        options=SaliencyMetricOptions(step_fraction=0.1),
        progress=False,
        standard_errors=True,  # the monitor's default
    )
    return {f"saliency/{k}": v for k, v in values.items()}
