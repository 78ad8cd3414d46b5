"""Add saliency monitoring to a LightningModule written without lico-lightning.

The classifier, data and training loop below are ordinary user code: scikit-learn's 8x8
digits (shipped with scikit-learn, no download) and a small CNN. The lines marked ``# (+)``
are all it takes to watch Grad-CAM / Grad-CAM++ maps and their insertion / deletion quality
evolve while it trains — logged as ``saliency/{method}/{metric}`` with overlay PNGs next to
the CSV logs.

    python examples/monitor_existing_module.py --epochs 5 --out runs/digits_monitor
"""

from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import CSVLogger
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lico_lightning.callbacks import SaliencyMonitor  # (+) 1/3


class DigitsCNN(pl.LightningModule):
    """A plain LightningModule: nothing here knows about saliency."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y))
        self.log("val/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def digits_loaders(batch_size: int = 64, limit: int | None = None, seed: int = 0):
    """scikit-learn digits as normalised (1, 8, 8) tensors, 80/20 split."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    x = (x - 0.5) / 0.5
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    if limit is not None:
        perm = perm[:limit]
    cut = int(0.8 * len(perm))
    train = TensorDataset(x[perm[:cut]], y[perm[:cut]])
    val = TensorDataset(x[perm[cut:]], y[perm[cut:]])
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True),
        DataLoader(val, batch_size=batch_size),
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="use only this many samples")
    parser.add_argument("--num-probes", type=int, default=16)
    parser.add_argument("--out", default="runs/digits_monitor")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pl.seed_everything(args.seed)
    model = DigitsCNN()
    train, val = digits_loaders(limit=args.limit, seed=args.seed)
    monitor = SaliencyMonitor(  # (+) 2/3
        methods=["gradcam", "gradcampp"], num_probes=args.num_probes, mean=(0.5,), std=(0.5,)
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=CSVLogger(args.out, name="digits"),
        callbacks=[monitor],  # (+) 3/3
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train, val)
    for key, value in sorted(monitor.last_results.items()):
        print(f"{key:40s} {value:.4f}")
    print(f"overlays: {trainer.logger.log_dir}/saliency/")
    return monitor.last_results


if __name__ == "__main__":
    main()
