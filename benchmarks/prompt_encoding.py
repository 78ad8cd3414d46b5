"""Prompt encoding per training step: what the batch needs vs every class at full length.

Side by side, in one run, on the open_clip ViT-B-32 text tower (random weights: timing only),
forward + backward to the context vectors, B random labels:

* ``all@77``  — every class's prompt at CLIP's 77 tokens (the official LICO code's cost);
* ``all@cut`` — every class, sequences cut to the longest prompt;
* ``batch``   — PromptLearner: distinct labels of the batch only, cut to their longest prompt.

Run: ``PYTHONPATH=src python benchmarks/prompt_encoding.py [--reps 3] [--batch 64]
[--datasets cifar10 cifar100]``.
Prints median seconds per step and the ratios all@77 / batch and all@cut / batch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F

from lico_lightning.text import OpenCLIPTextEncoder, PromptLearner

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100 = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()


def all_classes(prompts: PromptLearner, labels: torch.Tensor, length: int | None) -> torch.Tensor:
    """Encode every class's prompt (optionally padded to `length`), then gather per sample."""
    enc, n = prompts.text_encoder, prompts.n_ctx
    ids, mask = prompts.token_ids, prompts.attention_mask
    if length is not None:
        ids = F.pad(ids, (0, length - ids.shape[1]), value=enc.pad_id)
        mask = F.pad(mask, (0, length - mask.shape[1]), value=False)
    emb = enc.embed_tokens(ids)
    ctx = prompts.ctx.unsqueeze(0).expand(emb.shape[0], -1, -1)
    emb = torch.cat([emb[:, :1], ctx, emb[:, 1 + n :]], dim=1)
    feats = enc(emb, mask)
    g_t = torch.einsum("cl,clk->ck", prompts.class_weights, feats[:, : prompts.token_ids.shape[1]])
    g = torch.cat([feats[:, 1 : 1 + n], g_t.unsqueeze(1)], dim=1)
    return g[labels]


def step(fn) -> float:
    t0 = time.perf_counter()
    fn().square().mean().backward()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n-ctx", type=int, default=12)
    parser.add_argument("--datasets", nargs="+", default=["cifar10", "cifar100"])
    args = parser.parse_args()

    torch.manual_seed(0)
    enc = OpenCLIPTextEncoder("ViT-B-32", pretrained=None)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, ViT-B-32 text tower")
    chosen = {"cifar10": ("CIFAR-10", CIFAR10), "cifar100": ("CIFAR-100", CIFAR100)}
    for dataset, names in (chosen[d] for d in args.datasets):
        prompts = PromptLearner(names, enc, n_ctx=args.n_ctx, dynamic_context=False).train()
        labels = torch.randint(0, len(names), (args.batch,))
        # same features from both paths (sanity)
        with torch.no_grad():
            torch.testing.assert_close(
                prompts(labels), all_classes(prompts, labels, 77), rtol=1e-4, atol=1e-4
            )
        variants = {
            "all@77": partial(all_classes, prompts, labels, 77),
            "all@cut": partial(all_classes, prompts, labels, None),
            "batch": partial(prompts, labels),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.reps):  # interleaved, so machine load hits every variant alike
            for name, fn in variants.items():
                prompts.zero_grad(set_to_none=True)
                times[name].append(step(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        n_uniq = int(labels.unique().numel())
        cut = prompts.token_ids.shape[1]
        print(
            f"{dataset}: B={args.batch}, {len(names)} classes ({n_uniq} in batch), "
            f"n_ctx={args.n_ctx}, prompt length {cut} (vs 77)"
        )
        for k, v in med.items():
            print(f"  {k:8s} {v * 1e3:9.1f} ms/step")
        print(
            f"  speed-up all@77/batch = {med['all@77'] / med['batch']:.1f}x, "
            f"all@cut/batch = {med['all@cut'] / med['batch']:.2f}x"
        )


if __name__ == "__main__":
    main()
