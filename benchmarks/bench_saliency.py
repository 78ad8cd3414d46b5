"""Score-CAM and RISE: batched masked forwards vs one masked image at a time.

Side by side in one process on CPU: torchvision ResNet-18 (random weights, 10 classes), a batch
of ``--images`` images of ``--size`` px. Score-CAM reads ``layer4`` (512 feature maps; only
non-constant ones are evaluated); RISE uses ``--masks`` masks on a 7x7 grid. Each variant is
the same explainer with ``batch_size=1`` (the public reference implementations' loop) or
``batch_size=--batch``; both give the same maps (max |difference| printed). Timings are the
median of ``--repeats`` interleaved runs with one intra-op thread (the shared 2-core machine
makes multi-threaded timings depend on other processes' load more than on the algorithm).

Run: ``PYTHONPATH=src python benchmarks/bench_saliency.py``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from lico_lightning.explain import RISE, GradCAM, ScoreCAM


def _time(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--masks", type=int, default=500)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    images = torch.randn(args.images, 3, args.size, args.size)
    target = torch.arange(args.images) % 10

    variants = {
        "scorecam": (
            ScoreCAM(net, "layer4", batch_size=1),
            ScoreCAM(net, "layer4", batch_size=args.batch),
        ),
        "rise": (
            RISE(net, num_masks=args.masks, batch_size=1),
            RISE(net, num_masks=args.masks, batch_size=args.batch),
        ),
    }
    gradcam = GradCAM(net, "layer4")
    gradcam.attribute(images, target)  # warm-up
    t_gradcam = statistics.median(
        _time(lambda: gradcam.attribute(images, target))[0] for _ in range(3)
    )

    print(
        f"ResNet-18, {args.images} images of {args.size}x{args.size}, batch {args.batch}, "
        f"{args.threads} thread(s), median of {args.repeats}; Grad-CAM takes {t_gradcam * 1e3:.1f} ms"
    )
    print(
        f"{'method':10s} {'one-at-a-time [s]':>18s} {'batched [s]':>12s} {'speed-up':>9s} {'max |diff|':>11s}"
    )
    for name, (single, batched) in variants.items():
        batched.attribute(images[:1], target[:1])  # warm-up
        times_single, times_batched = [], []
        out_single = out_batched = None
        for _ in range(args.repeats):  # interleaved so that load changes hit both variants
            t, out_single = _time(lambda e=single: e.attribute(images, target))
            times_single.append(t)
            t, out_batched = _time(lambda e=batched: e.attribute(images, target))
            times_batched.append(t)
        ts, tb = statistics.median(times_single), statistics.median(times_batched)
        diff = float((out_single - out_batched).abs().max())
        print(f"{name:10s} {ts:18.2f} {tb:12.2f} {ts / tb:8.1f}x {diff:11.2e}")


if __name__ == "__main__":
    main()
