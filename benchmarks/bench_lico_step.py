"""LICO training-step cost relative to cross-entropy training, side by side in one run.

One optimizer step (forward + backward + SGD update) of ``LICOClassifier`` at the paper's
CIFAR setting — WRN-28-2, B=64, 32×32 images, 10 classes, n_ctx=12, open_clip ViT-B-32 text
tower (random weights: cost does not depend on them) — against the same model with
``alpha = beta = 0`` (plain CE, no text side built). The two variants alternate in rounds so
that background load hits both alike; the median per variant and their ratio are printed,
with a breakdown of the LICO extras (prompt encoding + h_psi, MM, OT). A third variant encodes
every prompt whole (``shared_prefix=False``) to show what encoding the shared
``[BOS] + context`` prefix once saves.

    python benchmarks/bench_lico_step.py [--threads 1] [--rounds 7] [--text-encoder minilm]

Target (issue #2): LICO / CE <= 1.5x on CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lico_lightning.data import CIFAR10_CLASSES
from lico_lightning.modules import LICOClassifier


def build(lico: bool, text_encoder: str) -> tuple[LICOClassifier, torch.optim.Optimizer]:
    torch.manual_seed(0)
    kwargs = (
        {"text_encoder": "openclip", "text_encoder_kwargs": {"pretrained": None}}
        if text_encoder == "openclip"
        else {"text_encoder": "minilm"}
    )
    model = LICOClassifier(
        CIFAR10_CLASSES,
        backbone="wrn28_2",
        image_size=32,
        alpha=10.0 if lico else 0.0,
        beta=1.0 if lico else 0.0,
        **kwargs,
    ).train()
    params = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4)


def step(
    model: LICOClassifier, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> None:
    opt.zero_grad(set_to_none=True)
    model.lico_losses(x, y)["loss"].backward()
    opt.step()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--text-encoder", choices=["openclip", "minilm"], default="openclip")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.arange(args.batch) % 10  # every class present: the most text work per step
    ce_model, ce_opt = build(False, args.text_encoder)
    lico_model, lico_opt = build(True, args.text_encoder)
    full_model, full_opt = build(True, args.text_encoder)
    full_model.prompt_learner.shared_prefix = False  # every prompt encoded whole
    shared = lico_model.prompt_learner._uses_shared_prefix(10)
    for _ in range(2):  # warm-up
        step(ce_model, ce_opt, x, y)
        step(lico_model, lico_opt, x, y)
        step(full_model, full_opt, x, y)

    def text_step(model: LICOClassifier) -> None:
        model.mapping(model.prompt_learner(y)).sum().backward()

    times: dict[str, list[float]] = {
        k: [] for k in ("ce", "lico", "lico_full", "text", "text_full", "mm", "ot")
    }
    feats = lico_model.backbone.forward_features(x).flatten(2).detach().requires_grad_()
    for _ in range(args.rounds):
        times["ce"].append(timed(lambda: step(ce_model, ce_opt, x, y)))
        times["lico"].append(timed(lambda: step(lico_model, lico_opt, x, y)))
        times["lico_full"].append(timed(lambda: step(full_model, full_opt, x, y)))
        times["text"].append(timed(lambda: text_step(lico_model)))
        times["text_full"].append(timed(lambda: text_step(full_model)))
        g = lico_model.mapping(lico_model.prompt_learner(y)).detach().requires_grad_()
        times["mm"].append(timed(lambda g=g: lico_model.mm_loss(feats, g).backward()))
        times["ot"].append(timed(lambda g=g: lico_model.ot_loss(feats, g).backward()))

    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(
        f"WRN-28-2, B={args.batch}, 32x32, text tower={args.text_encoder}, "
        f"threads={args.threads}, rounds={args.rounds}"
    )
    print(f"  CE-only step                 {med['ce']:8.1f} ms")
    print(f"  LICO step                    {med['lico']:8.1f} ms (shared prefix: {shared})")
    print(f"  LICO step, whole prompts     {med['lico_full']:8.1f} ms")
    print(f"    prompts + h_psi            {med['text']:8.1f} ms (fwd+bwd, 10 classes)")
    print(f"    prompts + h_psi, whole     {med['text_full']:8.1f} ms")
    print(f"    MM loss                    {med['mm']:8.1f} ms (fwd+bwd)")
    print(f"    OT loss                    {med['ot']:8.1f} ms (fwd+bwd)")
    print(f"  prompts: whole / shared      {med['text_full'] / med['text']:8.2f}x")
    print(f"  LICO / CE                    {med['lico'] / med['ce']:8.2f}x   (target <= 1.5x)")
    print(f"  LICO whole prompts / CE      {med['lico_full'] / med['ce']:8.2f}x")


if __name__ == "__main__":
    main()
