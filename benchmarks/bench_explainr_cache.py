"""EXPLAIN-R: a distillation step on cached CLIP embeddings vs recomputing CLIP every step.

Side by side in one run, same batch, same surrogate and loss (issue 10): the cached step is
surrogate forward + Algorithm 1 loss + AdamW step on embeddings looked up by index (what
:class:`~lico_lightning.data.ConceptPairDataset` serves); the online step additionally runs
the frozen CLIP image and text towers on the batch (under ``no_grad``), which is what an
implementation without a cache pays every step. Prints the time of each and the ratio, for a
tiny CLIP and for open_clip ViT-B-32 (random weights, no download).

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_explainr_cache.py
    PYTHONPATH=src python benchmarks/bench_explainr_cache.py --models tiny --batch 256
"""

from __future__ import annotations

import argparse
import time

import open_clip
import torch

from lico_lightning.concepts import ConceptSurrogate
from lico_lightning.losses import SurrogateDistillationLoss
from lico_lightning.text import tiny_openclip_config


def build(name: str) -> open_clip.CLIP:
    torch.manual_seed(0)
    if name == "tiny":
        return open_clip.CLIP(**tiny_openclip_config(context_length=16))
    return open_clip.create_model("ViT-B-32", pretrained=None)


def best_of(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(name: str, args: argparse.Namespace) -> tuple[int, float, float]:
    """(K, cached step seconds, online step seconds) for one CLIP."""
    b = args.batch
    clip = build(name).eval().requires_grad_(False)
    k = clip.text_projection.shape[1]
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    g = torch.Generator().manual_seed(0)
    images = torch.randn(b, 3, size, size, generator=g)
    tokens = open_clip.get_tokenizer("ViT-B-32", context_length=clip.context_length)(
        [f"a photo of a red circle number {i}" for i in range(b)]
    )
    concepts = (torch.rand(b, args.concepts, generator=g) < 0.002).float()
    with torch.no_grad():
        img_cache, txt_cache = clip.encode_image(images), clip.encode_text(tokens)
    f = ConceptSurrogate(args.concepts, k)
    loss_fn = SurrogateDistillationLoss(b)
    opt = torch.optim.AdamW(f.parameters(), lr=1e-3, amsgrad=True)
    index = torch.arange(b)

    def step(image_embeds, text_embeds):
        opt.zero_grad()
        loss_fn(image_embeds, text_embeds, f(concepts), index).loss.backward()
        opt.step()

    def cached():
        step(img_cache[index], txt_cache[index])

    def online():
        with torch.no_grad():
            image_embeds, text_embeds = clip.encode_image(images), clip.encode_text(tokens)
        step(image_embeds, text_embeds)

    return k, best_of(cached, args.reps), best_of(online, args.reps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "vitb32"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--concepts", type=int, default=4000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"batch={args.batch} concepts={args.concepts} threads={args.threads} (best of {args.reps})"
    )
    print(f"{'model':>7} {'K':>4} {'cached ms':>10} {'online ms':>10} {'online/cached':>14}")
    for name in args.models:
        k, t_cached, t_online = measure(name, args)
        print(
            f"{name:>7} {k:>4} {1e3 * t_cached:>10.2f} {1e3 * t_online:>10.1f} "
            f"{t_online / t_cached:>13.0f}×"
        )


if __name__ == "__main__":
    main()
