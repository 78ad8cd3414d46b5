"""Contrastive accumulation vs the big batch: time and peak memory per sample, side by side.

One training step (forward, loss, backward) of ``CLIPFineTuner`` on a batch of ``B`` pairs:
``accum_freq=1`` (the whole batch in one forward) against ``accum_freq=k`` (k micro-batches:
features without gradients, then each micro-batch recomputed with gradients). Every
configuration runs in its own child process, so the peak memory of one does not hide the
other's: on CUDA ``torch.cuda.max_memory_allocated``, on CPU the process's peak resident size
(``ru_maxrss``) minus its size before the first step (model and batch already built). Prints the ratios accumulated / big batch
(target: time per sample <= 1.4x, one extra forward per micro-batch).

Run: ``python benchmarks/bench_clip_accum.py`` (CPU, a narrow ViT so it takes about a minute);
``--width 768 --layers 12 --image-size 224 --batch 256 --device cuda`` for ViT-B-32 width on a GPU.
"""

from __future__ import annotations

import argparse
import json

from _child_measure import run_children, time_and_peak


def _step(args: argparse.Namespace, accum_freq: int) -> dict[str, float]:
    import torch

    from lico_lightning.modules import CLIPFineTuner
    from lico_lightning.text import tiny_openclip_config

    torch.manual_seed(0)
    cfg = tiny_openclip_config(context_length=32)
    cfg["vision_cfg"].update(
        width=args.width, layers=args.layers, image_size=args.image_size, patch_size=32
    )
    cfg["text_cfg"].update(width=args.width, layers=args.layers, heads=max(1, args.width // 64))
    device = torch.device(args.device)
    module = CLIPFineTuner(model_cfg=cfg).to(device).train()
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    tokens = module.tokenize([f"a photo number {i}" for i in range(args.batch)]).to(device)

    def run() -> None:
        if accum_freq == 1:
            module.contrastive_loss(images, tokens).backward()
        else:
            module.accumulated_backward(images, tokens, accum_freq=accum_freq)
        module.model.zero_grad(set_to_none=True)

    seconds, peak = time_and_peak(run, device, args.repeats)
    return {"seconds_per_sample": seconds / args.batch, "peak_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--accum-freq", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(_step(args, args.child)))
        return
    results = {}
    for k, result in run_children(__file__, [1, *args.accum_freq]):
        results[k] = result
        print(
            f"accum_freq={k}: {1e3 * results[k]['seconds_per_sample']:.2f} ms/sample, "
            f"peak +{results[k]['peak_bytes'] / 2**20:.0f} MiB",
            flush=True,
        )
    big = results[1]
    for k in args.accum_freq:
        r = results[k]
        print(
            f"accum_freq={k} / big batch: time per sample "
            f"{r['seconds_per_sample'] / big['seconds_per_sample']:.2f}x, peak memory "
            f"{r['peak_bytes'] / max(big['peak_bytes'], 1.0):.2f}x"
        )


if __name__ == "__main__":
    main()
