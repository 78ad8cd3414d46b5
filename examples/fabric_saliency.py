"""Saliency monitoring in a Lightning Fabric training script (one or several processes).

The same torchvision ResNet-18 as ``plain_loop_saliency.py`` trains on scikit-learn's digits
under Fabric. The ``SaliencyMonitor`` attaches to the model with ``monitor.attach(model, probes,
fabric=fabric)`` (ranks and loggers from Fabric) and runs on its schedule through one
``monitor.step(step)`` per optimizer step (lines marked ``# (+)``). With ``--devices 2`` every
process explains its share of the probe set and the logged values equal the single-process ones
on the same weights.

BatchNorm keeps per-process running statistics under DDP (each process would explain a
slightly different model); this script uses GroupNorm so every process holds the same one
(on GPUs, ``nn.SyncBatchNorm.convert_sync_batchnorm`` does the same for BatchNorm).

    python examples/fabric_saliency.py --devices 2 --steps 200 --every 50 --out runs/fabric
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from lightning_fabric import Fabric
from lightning_fabric.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from lico_lightning.callbacks import SaliencyMonitor  # (+) 1/4
from lico_lightning.data import DigitsDataModule


def make_model(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18, 3×3 stride-1 stem, no max-pool, GroupNorm (DDP-identical)."""
    model = torchvision.models.resnet18(
        num_classes=num_classes, norm_layer=lambda channels: nn.GroupNorm(8, channels)
    )
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1, help="CPU processes (gloo)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=50, help="monitor every k optimizer steps")
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--num-probes", type=int, default=16)
    parser.add_argument("--num-images", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/fabric")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    data = DigitsDataModule(image_size=args.image_size, batch_size=args.batch_size, seed=args.seed)
    data.setup("fit")
    monitor = SaliencyMonitor(  # (+) 2/4
        methods=["gradcam"],
        metrics=["insertion", "deletion", "overall"],
        every_n_train_steps=args.every,
        num_probes=args.num_probes,
        num_images=args.num_images,
        mean=data.mean,
        std=data.std,
        class_names=data.class_names,
    )
    fabric = Fabric(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        loggers=CSVLogger(out, name="fabric"),
    )
    fabric.launch()
    fabric.seed_everything(args.seed)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    model, optimizer = fabric.setup(model, optimizer)
    loader = fabric.setup_dataloaders(
        DataLoader(data.train_dataset, batch_size=args.batch_size, shuffle=True)
    )
    monitor.attach(model, data.val_dataset, fabric=fabric)  # (+) 3/4: ranks, loggers from fabric

    history: list[tuple[int, dict[str, float]]] = []
    step, epoch = 0, 0
    while step < args.steps:
        model.train()
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
            step += 1
            logged = monitor.step(step)  # (+) 4/4: {} unless the schedule fires
            if logged:
                history.append((step, logged))
            if step >= args.steps:
                break
        epoch += 1

    checkpoint = out / "checkpoint.pt"
    state = {"model": model, "optimizer": optimizer, "step": step, "monitor": monitor}
    fabric.save(checkpoint, state)
    fabric.logger.finalize("success")
    if fabric.global_rank == 0:
        (out / "metrics.json").write_text(json.dumps(history, indent=1))
        for step_, logged in history:
            print(f"step {step_:5d}  " + "  ".join(f"{k} {v:.4f}" for k, v in logged.items()))
    return {"history": history, "checkpoint": checkpoint, "log_dir": fabric.logger.log_dir}


if __name__ == "__main__":
    main()
