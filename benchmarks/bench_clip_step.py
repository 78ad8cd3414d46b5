"""Training step of CLIPFineTuner (through a Lightning Trainer) vs a hand-written loop doing
open_clip's own step: same model, batch, ClipLoss, AdamW groups, warmup+cosine, logit_scale clamp.

    python benchmarks/bench_clip_step.py               # tiny (shapes recipe) and ViT-B-32 width
    python benchmarks/bench_clip_step.py --sizes tiny --steps 40

Per-step wall time = time between consecutive batch starts (data fetch + forward + backward +
optimiser step + hooks), median over the steps after a warm-up; both runs alternate ``--rounds``
times in one process (alternating which goes first) so machine load hits them alike. Target: ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import statistics
import time

import open_clip
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lico_lightning.modules import CLIPFineTuner, clip_param_groups, warmup_cosine_lambda

SIZES = {
    "tiny": dict(
        cfg={
            "embed_dim": 64,
            "vision_cfg": {
                "image_size": 64,
                "patch_size": 8,
                "width": 64,
                "layers": 2,
                "head_width": 32,
            },
            "text_cfg": {
                "context_length": 16,
                "vocab_size": 49408,
                "width": 64,
                "heads": 2,
                "layers": 2,
            },
        },
        batch=64,
    ),
    "vit_b32": dict(cfg=open_clip.get_model_config("ViT-B-32"), batch=16),
}


def _loader(cfg: dict, batch: int, steps: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    size = cfg["vision_cfg"]["image_size"]
    ctx = cfg["text_cfg"]["context_length"]
    images = torch.randn(batch, 3, size, size, generator=g)
    tokens = torch.randint(1, 49000, (batch, ctx), generator=g)
    tokens[:, 0], tokens[:, -1] = 49406, 49407
    n = batch * steps
    index = torch.arange(n)
    return DataLoader(
        TensorDataset(images.repeat(steps, 1, 1, 1), tokens.repeat(steps, 1), index),
        batch_size=batch,
    )


def _hand_loop(model: torch.nn.Module, loader: DataLoader, steps: int) -> list[float]:
    loss_fn = open_clip.loss.ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True)
    optimizer = torch.optim.AdamW(
        clip_param_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.98), eps=1e-6
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_lambda(2, steps))
    model.train()
    times, last = [], time.perf_counter()
    for images, tokens, _ in loader:
        out = model(images, tokens)
        loss = loss_fn(*out) if not isinstance(out, dict) else loss_fn(**out)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return times


class _StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, *args) -> None:
        self.starts.append(time.perf_counter())


def _lightning(model: torch.nn.Module, loader: DataLoader, steps: int) -> list[float]:
    module = CLIPFineTuner(model=model, lr=1e-4, warmup_steps=2)
    timer = _StepTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=loader)
    s = timer.starts
    return [b - a for a, b in itertools.pairwise(s)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["tiny", "vit_b32"], choices=list(SIZES))
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per run (default 30 tiny, 6 ViT-B-32)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name in args.sizes:
        spec = SIZES[name]
        steps = args.steps or (30 if name == "tiny" else 6)
        base = open_clip.CLIP(**spec["cfg"])
        loader = _loader(spec["cfg"], spec["batch"], steps)
        hand, ours = [], []
        for r in range(args.rounds):  # alternate which side runs first
            runs = [(hand, _hand_loop), (ours, _lightning)]
            for out, run in runs if r % 2 == 0 else runs[::-1]:
                out += run(copy.deepcopy(base), loader, steps)[args.warmup :]
        h, o = statistics.median(hand), statistics.median(ours)
        params = sum(p.numel() for p in base.parameters()) / 1e6
        print(
            f"{name:8s} ({params:.1f} M params, batch {spec['batch']}): hand-written open_clip step "
            f"{h * 1e3:.1f} ms, CLIPFineTuner {o * 1e3:.1f} ms, ratio {o / h:.3f} "
            f"({len(hand)} vs {len(ours)} steps)"
        )


if __name__ == "__main__":
    main()
