"""GroundingMonitor overhead in the shapes setting, and the per-probe cost of every method.

Measured side by side in one run on the tiny CLIP of the shapes recipe (2-layer 64-wide ViT,
8-px patches, 64-px images, 16-token captions) with batch 64:

* one epoch of the recipe — its training steps (open_clip ``ClipLoss`` + AdamW, ``--num-train``
  scenes × 2 captions / batch 64) plus its validation pass (``--num-val`` scenes × 2 captions
  encoded) — against the recipe's ``GroundingMonitor`` (its ``init_args`` read from
  ``recipes/clip_shapes.yaml``: methods, metrics, probes, explainer settings) run once, divided
  by its ``every_n_epochs``: the monitor's overhead at the recipe's schedule (target ≤ 5 %);
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
from pathlib import Path

import open_clip
import torch
import yaml
from open_clip.loss import ClipLoss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from clip_grounding_plain_loop import model_config

from lico_lightning.callbacks import GroundingMonitor
from lico_lightning.data import ShapesCaptionDataModule
from lico_lightning.explain import list_pair_explainers

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clip_shapes.yaml"


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
    parser.add_argument("--num-val", type=int, default=500, help="validation scenes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-probes", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=None, help="per-probe costs of these")
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

    @torch.no_grad()
    def val_batch() -> None:
        model.eval()
        model(images, tokens)

    train_step()  # warm-up
    step_s = _best(train_step, max(repeats, 3))
    val_s = _best(val_batch, max(repeats, 3))
    steps_per_epoch = (args.num_train * 2 + args.batch_size - 1) // args.batch_size
    val_batches = (args.num_val * 2 + args.batch_size - 1) // args.batch_size
    epoch_s = step_s * steps_per_epoch + val_s * val_batches
    recipe = yaml.safe_load(RECIPE.read_text())
    (monitor_cfg,) = [
        c["init_args"]
        for c in recipe["trainer"]["callbacks"]
        if c["class_path"].endswith("GroundingMonitor")
    ]
    every = monitor_cfg.get("every_n_epochs", 1)
    recipe_kw = {
        k: v for k, v in monitor_cfg.items() if k not in ("methods", "every_n_epochs", "num_images")
    }
    if args.quick:
        recipe_kw["num_probes"] = probes_n

    def monitor_run(methods, **kw) -> float:
        kw.setdefault("num_probes", probes_n)
        monitor = GroundingMonitor(methods=methods, every_n_train_steps=1, log_images=False, **kw)
        monitor.attach(model, data.val_dataset)
        monitor.step(1)  # draws the probes, builds the explainers
        clock = {"step": 1}

        def once() -> None:
            clock["step"] += 1
            if not monitor.step(clock["step"]):
                raise RuntimeError(f"{methods} logged nothing (see the warning above)")

        return _best(once, repeats)

    default_s = monitor_run(monitor_cfg["methods"], **recipe_kw)
    n_recipe = recipe_kw.get("num_probes", 16)
    print(f"recipe monitor: {monitor_cfg}")
    print(
        f"tiny CLIP {width}-wide, {size}px, batch {batch}, {probes_n} probes, torch threads "
        f"{torch.get_num_threads()}"
    )
    print(f"training step                 {step_s * 1e3:9.1f} ms")
    print(f"validation batch              {val_s * 1e3:9.1f} ms")
    print(f"epoch ({steps_per_epoch} steps + {val_batches} val)   {epoch_s:9.2f} s")
    print(f"monitor run ({n_recipe} probes)      {default_s:9.2f} s  every {every} epoch(s)")
    overhead = default_s / every / epoch_s
    print(f"overhead per epoch            {overhead * 100:9.2f} %   (target <= 5 %)")
    print()
    print(f"{'method':24s} {'per probe':>10s} {'x train step':>13s}   (monitor defaults, PGA+PGE)")
    results = {"step_s": step_s, "epoch_s": epoch_s, "monitor_s": default_s, "overhead": overhead}
    for method in args.methods or list_pair_explainers():
        try:
            seconds = monitor_run([method], metrics=["pga", "pge"]) / probes_n
        except RuntimeError as err:
            print(f"{method:24s} failed: {err}")
            continue
        results[method] = seconds
        print(f"{method:24s} {seconds * 1e3:8.1f} ms {seconds / step_s:12.2f}x")
    return results


if __name__ == "__main__":
    main()
