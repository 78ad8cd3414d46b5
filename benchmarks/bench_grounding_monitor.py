"""GroundingMonitor overhead in the shapes setting, and the per-probe cost of every method.

Measured side by side in one run on the tiny CLIP of the shapes recipe (2-layer 64-wide ViT,
8-px patches, 64-px images, 16-token captions) with batch 64:

* the training step of an open_clip contrastive loop (``ClipLoss`` + AdamW), times the steps
  of one epoch (``--num-train`` scenes × 2 captions / batch), against one run of the monitor at
  its defaults (InteractionCAM + integrated Jacobians with 4 steps; PGA, PGE, mPGE, distractor
  PGA/PGE; 16 probes) — the monitor runs once per epoch in the recipe, so the ratio is its
  overhead (target ≤ 5 %);
* the per-probe cost of every registered pair explainer at the monitor's default settings
  (:data:`~lico_lightning.callbacks.grounding_monitor.DEFAULT_EXPLAINER_KWARGS`), relative to
  one training step.

    python benchmarks/bench_grounding_monitor.py            # ~1-2 CPU minutes
    python benchmarks/bench_grounding_monitor.py --quick    # tiny sizes, a smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import open_clip
import torch
from open_clip.loss import ClipLoss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from clip_grounding_plain_loop import model_config

from lico_lightning.callbacks import GroundingMonitor
from lico_lightning.data import ShapesCaptionDataModule
from lico_lightning.explain import list_pair_explainers


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--num-train", type=int, default=4000, help="scenes of the recipe")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-probes", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    width, size, batch = (32, 32, 8) if args.quick else (64, 64, args.batch_size)
    probes_n = 3 if args.quick else args.num_probes
    repeats = 1 if args.quick else args.repeats
    torch.manual_seed(0)
    cfg = model_config(width, 2, size)
    data = ShapesCaptionDataModule(model_cfg=cfg, num_train=64, num_val=64, num_test=4)
    data.setup("fit")
    model = open_clip.CLIP(**cfg, output_dict=True)
    loss_fn = ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
    loader = torch.utils.data.DataLoader(data.train_dataset, batch_size=batch, shuffle=True)
    images, tokens, _ = next(iter(loader))

    def train_step() -> None:
        model.train()
        out = model(images, tokens)
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    train_step()  # warm-up
    step_s = _best(train_step, max(repeats, 3))
    steps_per_epoch = (args.num_train * 2 + args.batch_size - 1) // args.batch_size
    epoch_s = step_s * steps_per_epoch

    def monitor_run(methods, **kw) -> float:
        monitor = GroundingMonitor(
            methods=methods, num_probes=probes_n, every_n_train_steps=1, log_images=False, **kw
        )
        monitor.setup(model, data.val_dataset)
        monitor.step(1)  # draws the probes, builds the explainers
        clock = {"step": 1}

        def once() -> None:
            clock["step"] += 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert monitor.step(clock["step"]), "the monitor logged nothing"

        return _best(once, repeats)

    default_s = monitor_run(["interaction_cam", "integrated_jacobians"])
    print(
        f"tiny CLIP {width}-wide, {size}px, batch {batch}, {probes_n} probes, torch threads "
        f"{torch.get_num_threads()}"
    )
    print(f"training step                 {step_s * 1e3:9.1f} ms")
    print(f"epoch ({steps_per_epoch} steps)            {epoch_s:9.2f} s")
    print(f"monitor run (defaults)        {default_s:9.2f} s")
    print(f"overhead per epoch            {default_s / epoch_s * 100:9.2f} %   (target <= 5 %)")
    print()
    print(f"{'method':24s} {'per probe':>10s} {'x train step':>13s}   (monitor defaults, PGA+PGE)")
    results = {"step_s": step_s, "epoch_s": epoch_s, "monitor_s": default_s}
    for method in list_pair_explainers():
        seconds = monitor_run([method], metrics=["pga", "pge"]) / probes_n
        results[method] = seconds
        print(f"{method:24s} {seconds * 1e3:8.1f} ms {seconds / step_s:12.2f}x")
    return results


if __name__ == "__main__":
    main()
