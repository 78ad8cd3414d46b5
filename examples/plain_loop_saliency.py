"""Saliency monitoring in a plain PyTorch training loop (no Lightning Trainer, no Fabric).

A torchvision ResNet-18 (CIFAR-style stem for 32-px images) trains on scikit-learn's digits
(shipped with scikit-learn, no download) in an ordinary hand-written loop. The lines marked
``# (+)`` add a ``SaliencyMonitor``: every ``--every`` optimizer steps it explains a fixed
probe set with Grad-CAM (``--methods``), returns and logs
``saliency/{method}/{insertion,deletion,overall}``
and writes a labelled overlay PNG under ``--out`` — or to TensorBoard with ``--tensorboard``.
The loop's weights, gradients, modes and random numbers are exactly what they would be without
it, and its state goes into the loop's own checkpoint.

    python examples/plain_loop_saliency.py --steps 200 --every 50 --out runs/plain_loop

The README's overlay figure (``docs/saliency_overlay.png``) is this script's last overlay of

    python examples/plain_loop_saliency.py --steps 60 --every 60 --batch-size 32 --lr 0.02 \
        --methods gradcam gradcampp scorecam --num-images 3 --out runs/readme_overlay
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader

from lico_lightning.callbacks import SaliencyMonitor  # (+) 1/4
from lico_lightning.data import DigitsDataModule


def make_model(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with a 3×3 stride-1 stem and no max-pool (32-px inputs)."""
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=50, help="monitor every k optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--methods", nargs="+", default=["gradcam"], help="explainer names")
    parser.add_argument("--num-probes", type=int, default=16)
    parser.add_argument("--num-images", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/plain_loop")
    parser.add_argument("--tensorboard", action="store_true", help="log to a SummaryWriter")
    parser.add_argument("--no-monitor", action="store_true", help="the same loop, unmonitored")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    data = DigitsDataModule(image_size=args.image_size, batch_size=args.batch_size, seed=args.seed)
    data.setup("fit")
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)

    monitor = None
    writer = None
    if not args.no_monitor:
        monitor = SaliencyMonitor(  # (+) 2/4
            methods=args.methods,
            metrics=["insertion", "deletion", "overall"],
            every_n_train_steps=args.every,
            num_probes=args.num_probes,
            num_images=args.num_images,
            mean=data.mean,
            std=data.std,
            class_names=data.class_names,
        )
        if args.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(out / "tensorboard")
        monitor.attach(model, data.val_dataset, log_dir=out, logger=writer)  # (+) 3/4

    history: list[tuple[int, dict[str, float]]] = []
    # shuffled from the global torch RNG, as most loops do: the monitor must not disturb it
    loader = DataLoader(data.train_dataset, batch_size=args.batch_size, shuffle=True)
    step, epoch = 0, 0
    while step < args.steps:
        model.train()  # once per epoch: the monitor must leave the modes as it found them
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if monitor is not None:
                logged = monitor.step(step, None)  # (+) 4/4: {} unless the schedule fires
                if logged:
                    history.append((step, logged))
                    print(
                        f"step {step:5d}  " + "  ".join(f"{k} {v:.3f}" for k, v in logged.items())
                    )
            if step >= args.steps:
                break
        epoch += 1

    checkpoint = out / "checkpoint.pt"
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "monitor": monitor.state_dict() if monitor is not None else None,
        },
        checkpoint,
    )
    (out / "metrics.json").write_text(json.dumps(history, indent=1))
    if writer is not None:
        writer.close()
    return {"model": model, "monitor": monitor, "history": history, "checkpoint": checkpoint}


if __name__ == "__main__":
    main()
