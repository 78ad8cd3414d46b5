"""Watch phrase grounding while training CLIP in a plain open_clip contrastive loop.

A tiny open_clip CLIP trains from scratch on the generated shape scenes ("a small red circle
left of a large blue square", offline, no files) with open_clip's own ``ClipLoss`` and AdamW in
an ordinary hand-written loop. The lines marked ``# (+)`` add a ``GroundingMonitor``: every
``--every`` optimizer steps it explains a fixed probe set of (image, caption, phrase, box)
items, returns (and logs) ``grounding/{method}/{pga,pge,mpge,pga_distractor,...}`` — the
phrase map against its own box and against the other shape's box — and writes an overlay PNG
under ``--out``. The loop's weights, gradients, modes and random numbers are exactly what
they would be without it, and its state goes into the loop's own checkpoint.

    python examples/clip_grounding_plain_loop.py --steps 600 --every 100 --out runs/clip_grounding
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.loss import ClipLoss
from torch.utils.data import DataLoader

from lico_lightning.callbacks import GroundingMonitor  # (+) 1/4
from lico_lightning.data import ShapesCaptionDataModule


def model_config(width: int = 64, layers: int = 2, image_size: int = 64) -> dict[str, Any]:
    """An open_clip config of a tiny CLIP: ViT with 8-px patches, causal text tower, 16 tokens."""
    return {
        "embed_dim": width,
        "vision_cfg": {
            "image_size": image_size,
            "patch_size": 8,
            "width": width,
            "layers": layers,
            "head_width": 32,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": width,
            "heads": max(1, width // 32),
            "layers": layers,
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100, help="monitor every k optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=4000, help="training scenes")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--methods", nargs="+", default=["interaction_cam", "integrated_jacobians"])
    parser.add_argument("--num-probes", type=int, default=16)
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/clip_grounding")
    parser.add_argument("--no-monitor", action="store_true", help="the same loop, unmonitored")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    cfg = model_config(args.width, args.layers, args.image_size)
    data = ShapesCaptionDataModule(
        model_cfg=cfg, num_train=args.num_train, num_val=200, num_test=8, seed=args.seed
    )
    data.setup("fit")
    model = open_clip.CLIP(
        **cfg, output_dict=True
    )  # from scratch (for a pretrained one: open_clip.create_model)
    loss_fn = ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-6)

    monitor = None
    if not args.no_monitor:
        monitor = GroundingMonitor(  # (+) 2/4
            methods=args.methods,
            every_n_train_steps=args.every,
            num_probes=args.num_probes,
            num_images=args.num_images,
            mean=data.mean,
            std=data.std,
        )
        monitor.attach(model, data.val_dataset, log_dir=out)  # (+) 3/4: probes drawn from it

    history: list[tuple[int, dict[str, float]]] = []
    # shuffled from the global torch RNG, as most loops do: the monitor must not disturb it
    loader = DataLoader(data.train_dataset, batch_size=args.batch_size, shuffle=True)
    step = 0
    while step < args.steps:
        model.train()  # once per epoch: the monitor must leave the modes as it found them
        for images, tokens, _ in loader:
            out_ = model(images, tokens)
            loss = loss_fn(out_["image_features"], out_["text_features"], out_["logit_scale"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, 4.6052)  # open_clip's clamp at ln(100)
            step += 1
            if monitor is not None:
                logged = monitor.step(step)  # (+) 4/4: {} unless the schedule fires
                if logged:
                    history.append((step, logged))
                    print(
                        f"step {step:5d}  loss {loss.item():.3f}  "
                        + "  ".join(f"{k.split('/', 1)[1]} {v:.2f}" for k, v in logged.items())
                    )
            if step >= args.steps:
                break

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
    return {"model": model, "monitor": monitor, "history": history, "checkpoint": checkpoint}


if __name__ == "__main__":
    main()
