"""LoRA vs full fine-tuning of CLIP: trainable parameters, step time and peak memory, side by side.

One optimiser step (forward, open_clip's ``ClipLoss``, backward, AdamW step with open_clip's
groups) of ``CLIPFineTuner`` on a batch of ``B`` pairs: full fine-tuning against
``lora_rank=r`` for each ``--rank`` (adapters on the fused q/k/v, attention output and MLP
projections of both towers; the rest frozen). Every configuration runs in its own child
process, so the peak memory of one does not hide the other's: on CUDA
``torch.cuda.max_memory_allocated``, on CPU the process's peak resident size (``ru_maxrss``);
both minus the size before the first step (model and batch already built), so the peak counts
gradients, AdamW states and activations, not the weights themselves. Prints the ratios
LoRA / full (target: peak memory <= 0.6x).

Run: ``python benchmarks/bench_clip_lora.py`` (ViT-B-32 as open_clip configures it, random
weights); ``--width 256 --layers 4 --image-size 96`` for a narrower ViT on a slow CPU;
``--device cuda --batch 128`` on a GPU.

Measured on the shared 2-core CPU (``OMP_NUM_THREADS=1``, torch 2.14, ViT-B-32 config, random
weights, ``python benchmarks/bench_clip_lora.py --batch B``; step times vary with the machine's
load by up to ±30 %):

====== ====================== ============== ============= ============
batch  trainable (LoRA r=8)   full s/step    LoRA s/step   peak memory
====== ====================== ============== ============= ============
8      1.97M of 153M (0.013x) 8.4            6.2 (0.74x)   0.42x
16     1.97M of 153M (0.013x) 13.3           11.3 (0.85x)  0.61-0.62x
====== ====================== ============== ============= ============

What LoRA leaves is the frozen base's activations (the adapters need every projection's input
for their gradient, as full fine-tuning does); gradients and AdamW states of the 151M weights
are gone. So the ratio grows with the batch: pair LoRA with ``grad_checkpointing=True`` or
``accum_freq`` for large batches.
"""

from __future__ import annotations

import argparse
import json

from _child_measure import run_children, time_and_peak


def _step(args: argparse.Namespace, rank: int) -> dict[str, float]:
    import torch

    from lico_lightning.modules import CLIPFineTuner, clip_param_groups
    from lico_lightning.text import tiny_openclip_config

    torch.manual_seed(0)
    lora = {"lora_rank": rank} if rank > 0 else {}
    if args.width > 0:  # a narrower ViT of the same shape
        cfg = tiny_openclip_config(context_length=77)
        cfg["vision_cfg"].update(
            width=args.width, layers=args.layers, image_size=args.image_size, patch_size=32
        )
        cfg["text_cfg"].update(width=args.width, layers=args.layers, heads=max(1, args.width // 64))
        module = CLIPFineTuner(model_cfg=cfg, **lora)
        size = args.image_size
    else:
        module = CLIPFineTuner(model_name="ViT-B-32", **lora)
        size = 224
    device = torch.device(args.device)
    module = module.to(device).train()
    groups = [g for g in clip_param_groups(module.model, 0.1) if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=1e-5, betas=(0.9, 0.98), eps=1e-6)
    images = torch.randn(args.batch, 3, size, size, device=device)
    tokens = module.tokenize([f"a photo number {i}" for i in range(args.batch)]).to(device)
    trainable = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.model.parameters())

    def run() -> None:
        module.contrastive_loss(images, tokens).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds, peak = time_and_peak(run, device, args.repeats)
    return {
        "trainable": float(trainable),
        "total": float(total),
        "seconds_per_step": seconds,
        "peak_bytes": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rank", type=int, nargs="+", default=[8])
    parser.add_argument("--width", type=int, default=0, help="0: ViT-B-32's own config")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(_step(args, args.child)))
        return
    results = {}
    for rank, r in run_children(__file__, [0, *args.rank]):
        results[rank] = r
        name = "full fine-tuning" if rank == 0 else f"LoRA r={rank}"
        print(
            f"{name}: {r['trainable'] / 1e6:.3f}M of {r['total'] / 1e6:.1f}M parameters "
            f"trainable, {r['seconds_per_step']:.3f} s/step, peak +{r['peak_bytes'] / 2**20:.0f} "
            "MiB",
            flush=True,
        )
    full = results[0]
    for rank in args.rank:
        r = results[rank]
        print(
            f"LoRA r={rank} / full: trainable {r['trainable'] / full['trainable']:.4f}x, step time "
            f"{r['seconds_per_step'] / full['seconds_per_step']:.2f}x, peak memory "
            f"{r['peak_bytes'] / max(full['peak_bytes'], 1.0):.2f}x"
        )


if __name__ == "__main__":
    main()
