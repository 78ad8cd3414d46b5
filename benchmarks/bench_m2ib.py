"""M2IB per-pair time: constant target (``lico_lightning.explain.M2IB``) vs recomputing both towers.

Side by side, in one run, on open_clip ViT-B-32 with random weights (timing only) on CPU, one
image and a 20-token caption, bottleneck after block 9, Q = 10 noisy copies:

* ``reference`` — what the reference code (YingWANGG/M2IB) does per step: both towers on the
  Q copies, ``loss.backward()`` into the gates AND every model parameter (the parameters
  require grad), Adam on the gates;
* ``recompute`` — both towers on the Q copies every step, but parameters frozen and only the
  gates differentiated (``torch.autograd.grad``): isolates the cost of re-encoding the other
  modality;
* ``M2IB``     — the library: the other modality's embedding and the block output computed once
  under ``no_grad``, frozen parameters, gates only (its time includes those extra forwards and
  the final fit forward).

All three use the same bottleneck hook, objective, noise draws and Adam, so their maps agree
(printed: max |difference| to the library's map).

Run: ``PYTHONPATH=src python benchmarks/bench_m2ib.py [--steps 10] [--copies 10] [--reps 1]
[--towers image text] [--threads 2]``.
The variants run in turn within each repetition (machine load changes hit all alike).
Prints seconds per pair for each variant and the ratios reference / M2IB and recompute / M2IB.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor

from lico_lightning.explain import M2IB, OpenCLIPDualEncoder
from lico_lightning.functional.m2ib import bottleneck_capacity, gaussian_bottleneck

CAPTION = "a small brown dog with a red collar runs across the green grass next to a wooden fence"


def slow_m2ib(
    enc: OpenCLIPDualEncoder,
    tower: str,
    images: Tensor,
    tokens: Tensor,
    *,
    layer: int,
    steps: int,
    copies: int,
    beta: float,
    sigma2: float,
    seed: int,
    backward_into_params: bool,
) -> Tensor:
    """M2IB that re-encodes BOTH towers on the Q copies at every step; returns the (B, T) map."""
    model = enc.module
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        with enc.explaining():
            if not backward_into_params:
                for p, _ in flags:
                    p.requires_grad_(False)
            own_encode = enc.encode_image if tower == "image" else enc.encode_text
            own_inputs = images if tower == "image" else tokens
            with torch.no_grad(), enc.capture(tower, layer, on="output") as seen:
                own_encode(own_inputs)
            r = seen[0].detach()
            b, t, d = r.shape
            if tower == "image":
                valid = torch.ones(b, t, dtype=torch.bool)
            else:
                valid = torch.arange(t)[None] <= enc.eot_positions(tokens)[:, None]
            alpha = torch.full((b, t, d), 5.0, requires_grad=True)
            opt = torch.optim.Adam([alpha], lr=1.0)
            gen = torch.Generator().manual_seed(seed)
            rep_images = images.repeat_interleave(copies, 0)
            rep_tokens = tokens.repeat_interleave(copies, 0)
            w = valid.float()[..., None]
            for _ in range(steps):
                noise = torch.randn((copies, t, d), generator=gen)
                z = gaussian_bottleneck(r[:, None], alpha[:, None], noise[None], sigma2)
                z = torch.where(valid[:, None, :, None], z, r[:, None]).reshape(b * copies, t, d)
                with enc.intervene(tower, layer, lambda x, z=z: z, on="output"):
                    ei = enc.encode_image(rep_images)
                    et = enc.encode_text(rep_tokens)
                fit = F.cosine_similarity(ei, et, dim=-1).reshape(b, copies).mean(-1)
                kl = bottleneck_capacity(r, alpha, sigma2)
                compression = (kl * w).sum((1, 2)) / (w.sum((1, 2)) * d)
                loss = (beta * compression - fit).sum()
                if backward_into_params:
                    opt.zero_grad()
                    loss.backward()
                else:
                    (alpha.grad,) = torch.autograd.grad(loss, [alpha])
                opt.step()
            with torch.no_grad():
                kl = bottleneck_capacity(r, alpha, sigma2)
                return kl.sum(-1) * valid
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.zero_grad(set_to_none=True)


def timed_interleaved(fns: dict[str, Callable[[], Tensor]], reps: int):
    """Median seconds of each variant, running the variants in turn rep after rep (so that a
    change in machine load hits all of them alike), and each variant's last output."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs: dict[str, Tensor] = {}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--towers", nargs="+", default=["image", "text"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    enc = OpenCLIPDualEncoder(model, open_clip.get_tokenizer("ViT-B-32"))
    tokens = enc.tokenize([CAPTION])
    n_tokens = int(enc.eot_positions(tokens)[0]) + 1
    images = torch.randn(1, 3, 224, 224)
    common = {"layer": args.layer, "steps": args.steps, "beta": 0.1, "sigma2": 1.0, "seed": 0}
    print(
        f"open_clip ViT-B-32 (random weights), CPU threads={args.threads}, caption of "
        f"{n_tokens} tokens (SOT..EOT), layer {args.layer}, steps {args.steps}, "
        f"copies {args.copies}, 1 pair, median of {args.reps}"
    )
    print(
        f"{'tower':6s} {'reference s':>12s} {'recompute s':>12s} {'M2IB s':>9s} "
        f"{'ref/M2IB':>9s} {'recomp/M2IB':>12s} {'max|Δmap|/max':>14s}"
    )
    for tower in args.towers:
        m2ib = M2IB(enc, tower, num_copies=args.copies, **common)
        # warm-up (allocator, thread pools) on a 1-step run
        M2IB(enc, tower, layer=args.layer, steps=1, num_copies=args.copies)(images, tokens)
        slow = {
            name: (
                lambda tower=tower, flag=flag: slow_m2ib(
                    enc,
                    tower,
                    images,
                    tokens,
                    copies=args.copies,
                    backward_into_params=flag,
                    **common,
                )
            )
            for name, flag in (("recompute", False), ("reference", True))
        }
        t, outs = timed_interleaved(
            {"M2IB": lambda m2ib=m2ib: m2ib(images, tokens).token_capacity, **slow}, args.reps
        )
        t_ours, t_rec, t_ref = t["M2IB"], t["recompute"], t["reference"]
        out = outs["M2IB"]
        scale = float(out.abs().max())
        diff = max(float((outs[k] - out).abs().max()) for k in slow) / scale
        print(
            f"{tower:6s} {t_ref:12.2f} {t_rec:12.2f} {t_ours:9.2f} "
            f"{t_ref / t_ours:8.2f}x {t_rec / t_ours:11.2f}x {diff:14.1e}"
        )


if __name__ == "__main__":
    main()
