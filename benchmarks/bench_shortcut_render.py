"""Shortcut-benchmark rendering cost against a training step, side by side in one run.

Renders a batch of ``ShortcutDataModule`` training items (scene generation, the image, every
box and mask of the ground truth, default collate: what the DataLoader does with
``num_workers=0``) and times one cross-entropy training step (forward + backward + SGD
update) of the digits recipe's backbone (``recipes/lico_digits.yaml``: WRN-28-2, 32x32, B=64)
at the same batch size. The two alternate in rounds so that background load hits both alike;
the medians and their ratio are printed. A second line does the same for the counterfactuals a
ground-truth monitor renders per probe (the scene without each object).

    python benchmarks/bench_shortcut_render.py [--threads 1] [--rounds 7] [--batch 64]
        [--device cuda]

Rendering always runs on the CPU (in the DataLoader's process or workers); ``--device`` moves
the training step. Reading: a ratio well under 1 means ``num_workers=0`` does not slow
training down; above 1 (a fast GPU step), give the loader that many workers or more.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F
from torch.utils.data import default_collate

from lico_lightning.data import ShortcutDataModule
from lico_lightning.models import create_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dm = ShortcutDataModule(num_classes=3, image_size=args.image_size, num_train=100_000)
    dm.setup("fit")
    dataset = dm.train_dataset
    assert dataset is not None
    torch.manual_seed(0)
    device = torch.device(args.device)
    net = create_backbone("wrn28_2", num_classes=dm.num_classes).train().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    y = torch.arange(args.batch, device=device) % dm.num_classes

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = [0]

    def render() -> None:
        first = start[0]
        default_collate([dataset[i] for i in range(first, first + args.batch)])
        start[0] += args.batch  # new scenes every round: no cache helps

    def counterfactuals() -> None:
        first = start[0]
        torch.stack([dataset.counterfactuals(i) for i in range(first, first + args.batch)])
        start[0] += args.batch

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    for _ in range(2):  # warm-up
        step(), render(), counterfactuals()
    steps, renders, cfs = [], [], []
    for _ in range(args.rounds):
        steps.append(timed(step))
        renders.append(timed(render))
        cfs.append(timed(counterfactuals))
    s, r, c = (statistics.median(v) for v in (steps, renders, cfs))
    o = len(dataset.object_names)
    print(
        f"B={args.batch}, {args.image_size}px, {args.threads} thread(s), step on {device}, "
        f"median of {args.rounds}"
    )
    print(f"  WRN-28-2 CE training step: {s * 1e3:8.1f} ms")
    print(
        f"  render a batch of items:   {r * 1e3:8.1f} ms  ({r / args.batch * 1e3:.2f} ms/image)"
        f"  -> render / step = {r / s:.3f}"
    )
    print(
        f"  counterfactuals ({o} per scene): {c * 1e3:8.1f} ms  "
        f"({c / args.batch / o * 1e3:.2f} ms/image) -> counterfactuals / step = {c / s:.3f}"
    )


if __name__ == "__main__":
    main()
