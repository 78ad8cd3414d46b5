"""RRR and Grad-CAM-mask training steps relative to the cross-entropy step, side by side.

One optimizer step (forward + loss + backward + SGD update) of ``LICOClassifier`` with
``alpha = beta = 0`` on the same backbone (WRN-28-2, 10 classes, 32×32) and the same batch:

* CE: ``explanation_losses=None``;
* RRR: ``explanation_losses={"rrr": ...}`` — the input gradient with ``create_graph=True``,
  then the double backward through the whole network;
* Grad-CAM mask: ``{"gradcam_mask": ...}`` — the gradient w.r.t. the last feature map only,
  then the double backward through the Grad-CAM weights.

The batch's masks are the shortcut benchmark's ``cue_mask | distractor_mask`` shape (random
blobs here: the cost does not depend on where they are). The variants alternate in rounds so
that background load hits all alike; the median per variant and the ratios to CE are printed.

    python benchmarks/bench_explanation_losses.py [--threads 1] [--rounds 5] [--batch 64]

Target (issue 20): RRR / CE and Grad-CAM mask / CE <= 2.5x.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from lico_lightning.data import CIFAR10_CLASSES
from lico_lightning.modules import LICOClassifier

VARIANTS: dict[str, dict[str, Any] | None] = {
    "ce": None,
    "rrr": {"rrr": {"weight": 10.0}},
    "gradcam_mask": {"gradcam_mask": {"weight": 1.0}},
}


def build(losses: dict[str, Any] | None) -> tuple[LICOClassifier, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = LICOClassifier(
        CIFAR10_CLASSES,
        backbone="wrn28_2",
        image_size=32,
        alpha=0.0,
        beta=0.0,
        explanation_losses=losses,
    ).train()
    params = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4)


def step(
    model: LICOClassifier,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    gt: dict[str, torch.Tensor],
) -> None:
    opt.zero_grad(set_to_none=True)
    model.lico_losses(x, y, gt)["loss"].backward()
    opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=g)
    y = torch.arange(args.batch) % 10
    gt = {
        "cue_mask": torch.rand(args.batch, 32, 32, generator=g) < 0.1,
        "distractor_mask": torch.rand(args.batch, 32, 32, generator=g) < 0.2,
    }
    built = {name: build(losses) for name, losses in VARIANTS.items()}
    for _ in range(2):  # warm-up
        for model, opt in built.values():
            step(model, opt, x, y, gt)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (model, opt) in built.items():
            start = time.perf_counter()
            step(model, opt, x, y, gt)
            times[name].append(time.perf_counter() - start)

    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"WRN-28-2, B={args.batch}, 32x32, threads={args.threads}, rounds={args.rounds}")
    print(f"  CE step                      {med['ce']:8.1f} ms")
    print(f"  RRR step                     {med['rrr']:8.1f} ms")
    print(f"  Grad-CAM mask step           {med['gradcam_mask']:8.1f} ms")
    print(f"  RRR / CE                     {med['rrr'] / med['ce']:8.2f}x   (target <= 2.5x)")
    print(
        f"  Grad-CAM mask / CE           {med['gradcam_mask'] / med['ce']:8.2f}x   (target <= 2.5x)"
    )


if __name__ == "__main__":
    main()
