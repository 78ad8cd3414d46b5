"""SaliencyMonitor overhead in the digits recipe at its default schedule (target: ≤ 5 %).

Runs ``recipes/lico_digits.yaml`` through the ``lico-lightning`` CLI (``run=False``, then
``trainer.fit``) twice per repeat, each in a fresh process: **with** the recipe's
``SaliencyMonitor`` (its default schedule: once per epoch at validation end) and **without** it
(the callback removed, everything else identical). Printed side by side:

* the median wall time of an epoch (training + validation, from ``on_train_epoch_start`` to
  ``on_train_epoch_end``; the first epoch is left out as warm-up),
* the time spent inside the monitor per run (timed around its work),
* the overhead = (epoch with − epoch without) / epoch without, and the monitor's share of the
  monitored epoch (less noisy on a shared machine).

Run: ``PYTHONPATH=src python benchmarks/bench_monitor_overhead.py [--epochs 4] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "lico_digits.yaml"


def _child(variant: str, epochs: int, out: str, threads: int) -> None:
    import pytorch_lightning as pl
    import torch

    from lico_lightning.callbacks import SaliencyMonitor
    from lico_lightning.cli import build_cli

    torch.set_num_threads(threads)
    root = tempfile.mkdtemp(prefix="bench_monitor_")
    cli = build_cli(
        [
            "--config",
            str(RECIPE),
            f"--trainer.max_epochs={epochs}",
            f"--trainer.default_root_dir={root}",
            f"--trainer.logger.init_args.save_dir={root}",
            "--trainer.enable_progress_bar=false",
        ],
        run=False,
    )
    trainer = cli.trainer
    monitors = [c for c in trainer.callbacks if isinstance(c, SaliencyMonitor)]
    if variant == "with" and not monitors:  # recipe without a monitor: add the default one
        monitors = [SaliencyMonitor()]
        trainer.callbacks.append(monitors[0])
    if variant == "without":
        trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, SaliencyMonitor)]
        monitors = []

    monitor_times: list[float] = []
    for monitor in monitors:
        original = monitor._run

        def timed(*args, _original=original, **kwargs):
            start = time.perf_counter()
            _original(*args, **kwargs)
            monitor_times.append(time.perf_counter() - start)

        monitor._run = timed

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.starts.append(time.perf_counter())

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.times.append(time.perf_counter() - self.starts[-1])

    timer = EpochTimer()
    trainer.callbacks.append(timer)  # last: its epoch end comes after the monitor's
    trainer.fit(cli.model, datamodule=cli.datamodule)
    config = monitors[0].__dict__ if monitors else {}
    with open(out, "w") as fh:
        json.dump(
            {
                "epochs": timer.times,
                "monitor": monitor_times,
                "methods": config.get("methods"),
                "metrics": config.get("metrics"),
                "num_probes": config.get("num_probes"),
                "train_batches": trainer.num_training_batches,
                "val_batches": trainer.num_val_batches,
            },
            fh,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", choices=["with", "without"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.epochs, args.out, args.threads)
        return

    runs: dict[str, list[dict]] = {"with": [], "without": []}
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    for _ in range(args.repeats):
        for variant in ("without", "with"):  # interleaved so load changes hit both
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
                out = tmp.name
            cmd = [sys.executable, __file__, "--child", variant, "--out", out]
            cmd += ["--epochs", str(args.epochs), "--threads", str(args.threads)]
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            with open(out) as fh:
                runs[variant].append(json.load(fh))
            os.unlink(out)

    def epochs(variant: str) -> list[float]:
        return [t for r in runs[variant] for t in r["epochs"][1:]]

    t_with, t_without = statistics.median(epochs("with")), statistics.median(epochs("without"))
    monitor = [t for r in runs["with"] for t in r["monitor"][1:]] or [
        t for r in runs["with"] for t in r["monitor"]
    ]
    t_monitor = statistics.median(monitor)
    info = runs["with"][0]
    print(
        f"digits recipe, {args.epochs} epochs x {args.repeats} repeats, {args.threads} thread(s); "
        f"{info['train_batches']} train / {info['val_batches']} val batches per epoch; monitor: "
        f"methods={info['methods']} metrics={info['metrics']} num_probes={info['num_probes']}"
    )
    print(f"{'variant':16s} {'epoch [s] (median)':>19s}")
    print(f"{'without monitor':16s} {t_without:19.3f}")
    print(f"{'with monitor':16s} {t_with:19.3f}")
    print(f"monitor run (median): {t_monitor:.3f} s")
    print(f"overhead (epoch with / without - 1): {100 * (t_with / t_without - 1):+.1f} %")
    print(f"monitor share of a monitored epoch:  {100 * t_monitor / t_with:.1f} %")


if __name__ == "__main__":
    main()
