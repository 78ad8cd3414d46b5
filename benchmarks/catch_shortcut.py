"""Catch a shortcut while it trains: what the SaliencyMonitor logs on a CE run at a high cue
correlation, beside in-distribution and anti-split accuracy (issue 19, point 5).

A cross-entropy classifier (``recipes/lico_shortcut.yaml`` with ``alpha = beta = 0``: WRN-10-2,
32-px scenes of ``data.ShortcutDataModule``) trains at ``--cue-correlation`` (default 0.99: the
cue bar's colour names the label in 99 % of the training scenes). Every ``--every`` optimizer
steps, on ``--probes`` fixed in-distribution validation scenes, the recipe's
:class:`~lico_lightning.callbacks.SaliencyMonitor` logs

* **cue reliance** and **target reliance**: the drop of the explained logit when the probe is
  re-rendered without the cue / without the target (3 forwards per probe, no explainer);
* Grad-CAM's **shortcut share** and **evidence share**: its positive mass inside the cue / the
  target mask;
* each with its standard error over the probes;

and a small callback of this script logs the accuracy on the whole validation split
(in distribution, what a user has) and on the **anti** split (every cue names a wrong class:
what a user usually does not have). Everything is computed from in-distribution data except
the anti-split accuracy.

**When is the shortcut seen?** Rules fixed before the runs: the monitor *sees* it at the first
logged step where cue reliance exceeds target reliance by more than twice the standard error
of their difference (``sqrt(se_cue² + se_target²)``, the probes treated as independent); the
held-out accuracy *sees* it at the first logged step where anti-split accuracy lies more than
0.10 below the validation accuracy after the validation accuracy rose above chance + 0.10
(the model has learnt something, and what it learnt fails on the anti split). A run where a
rule never fires reports ``-``.

Writes ``runs.csv`` (one row per seed × logged step), ``summary.md`` (per seed: the two
detection steps; the final values) and ``summary.png`` (mean ± standard error over seeds per
step) under ``--out`` (default ``docs/catch_shortcut``); training runs under ``--work``
(default ``outputs/catch_shortcut``). Resumable per seed: a seed with its rows in
``{work}/seed{s}/rows.csv`` is not trained again.

    python benchmarks/catch_shortcut.py                     # 3 seeds, ~4 CPU minutes each
    python benchmarks/catch_shortcut.py --seeds 0 --epochs 1 --num-train 256 --probes 8 \\
        --every 2 --out /tmp/cs --work /tmp/csw             # a smoke run
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "lico_shortcut.yaml"
#: logged keys -> runs.csv columns
MONITORED = {
    "saliency/cue_reliance": "cue_reliance",
    "saliency/cue_reliance_se": "cue_reliance_se",
    "saliency/target_reliance": "target_reliance",
    "saliency/target_reliance_se": "target_reliance_se",
    "saliency/gradcam/shortcut_share": "shortcut_share",
    "saliency/gradcam/shortcut_share_se": "shortcut_share_se",
    "saliency/gradcam/evidence_share": "evidence_share",
    "saliency/gradcam/evidence_share_se": "evidence_share_se",
    "shortcut/accuracy_val": "accuracy_val",
    "shortcut/accuracy_anti": "accuracy_anti",
}
COLUMNS = ["seed", "step", "epoch", *MONITORED.values()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cue-correlation", type=float, default=0.99)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--every", type=int, default=4, help="log every k optimizer steps")
    parser.add_argument("--probes", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-eval", type=int, default=500, help="validation / anti scenes")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "catch_shortcut")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "catch_shortcut")
    args = parser.parse_args(argv)
    if not 0.0 <= args.cue_correlation <= 1.0:
        parser.error(f"Expected --cue-correlation in [0, 1], but got {args.cue_correlation}.")
    for name in ("epochs", "every", "probes", "num_train", "num_eval"):
        if getattr(args, name) < 1:
            parser.error(
                f"Expected --{name.replace('_', '-')} >= 1, but got {getattr(args, name)}."
            )
    return args


def _accuracy_callback(every: int) -> Any:
    import pytorch_lightning as pl

    class SplitAccuracy(pl.Callback):
        """Logs validation and anti-split accuracy on the monitor's schedule, then restores the
        module's mode (it evaluates in ``eval()`` without gradients; no randomness is drawn)."""

        def __init__(self) -> None:
            self.splits: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            step = trainer.global_step
            if step == 0 or step % every:
                return
            if not self.splits:  # rendered once: the scenes are fixed
                data = trainer.datamodule
                for name, loader in (
                    ("val", data.val_dataloader()),
                    ("anti", data.split_dataloader("anti")),
                ):
                    self.splits[name] = [(b[0], b[1]) for b in loader]
            values = {
                f"shortcut/accuracy_{name}": _accuracy(pl_module, batches)
                for name, batches in self.splits.items()
            }
            for logger in trainer.loggers:
                logger.log_metrics(values, step=step)

    return SplitAccuracy()


@torch.no_grad()
def _accuracy(module: torch.nn.Module, loader: Any) -> float:
    was_training = module.training
    module.eval()
    correct = total = 0
    try:
        for batch in loader:
            images, labels = batch[0], batch[1]
            correct += int((module(images).argmax(1) == labels).sum())
            total += int(labels.numel())
    finally:
        module.train(was_training)
    return correct / total


def run_seed(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    """Train one seed with the monitor and return its rows (cached in ``{work}/seed{seed}``)."""
    import pytorch_lightning as pl

    from lico_lightning._io import write_text
    from lico_lightning.callbacks import SaliencyMonitor
    from lico_lightning.cli import build_cli

    run_dir = args.work / f"seed{seed}"
    cache = run_dir / "rows.csv"
    if cache.exists():
        return _read_rows(cache)
    pl.seed_everything(seed, workers=True)
    cli = build_cli(
        [
            "--config",
            str(RECIPE),
            "--model.alpha=0",
            "--model.beta=0",
            f"--seed_everything={seed}",
            f"--trainer.max_epochs={args.epochs}",
            f"--trainer.default_root_dir={run_dir}",
            f"--trainer.logger.init_args.save_dir={run_dir}",
            "--trainer.logger.init_args.name=log",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_checkpointing=false",
            "--trainer.callbacks=[]",
            f"--data.init_args.cue_correlation={args.cue_correlation}",
            f"--data.init_args.num_train={args.num_train}",
            f"--data.init_args.num_val={args.num_eval}",
            f"--data.init_args.num_test={args.num_eval}",
        ],
        run=False,
    )
    trainer = cli.trainer
    monitor = SaliencyMonitor(
        methods=["gradcam"],
        metrics=["evidence_share", "shortcut_share"],
        model_metrics=["cue_reliance", "target_reliance"],
        every_n_train_steps=args.every,
        num_probes=args.probes,
        standard_errors=True,
        log_images=False,
    )
    trainer.callbacks[:0] = [monitor, _accuracy_callback(args.every)]
    trainer.fit(cli.model, cli.datamodule)
    rows = _rows_from_log(Path(trainer.logger.log_dir) / "metrics.csv", seed)
    if not rows:
        raise RuntimeError(
            f"Expected logged monitor values in {trainer.logger.log_dir}, but got none."
        )
    write_text(cache, _csv_text(rows))
    return rows


def _rows_from_log(path: Path, seed: int) -> list[dict[str, Any]]:
    by_step: dict[int, dict[str, Any]] = {}
    with path.open() as f:
        for record in csv.DictReader(f):
            step = int(record["step"])
            row = by_step.setdefault(step, {"seed": seed, "step": step, "epoch": ""})
            if record.get("epoch"):
                row["epoch"] = int(float(record["epoch"]))
            for key, column in MONITORED.items():
                if record.get(key) not in (None, ""):
                    row[column] = float(record[key])
    return [by_step[s] for s in sorted(by_step) if all(c in by_step[s] for c in MONITORED.values())]


def _csv_text(rows: list[dict[str, Any]]) -> str:
    lines = [",".join(COLUMNS)]
    lines += [",".join(str(row.get(c, "")) for c in COLUMNS) for row in rows]
    return "\n".join(lines) + "\n"


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [
            {
                k: (int(v) if k in ("seed", "step") else float(v) if v not in ("",) else "")
                for k, v in r.items()
            }
            for r in csv.DictReader(f)
        ]


def detection_steps(rows: list[dict[str, Any]], chance: float) -> dict[str, int | None]:
    """The first logged step at which each rule of the module docstring fires."""
    monitor = held_out = None
    for row in sorted(rows, key=lambda r: r["step"]):
        se = math.sqrt(row["cue_reliance_se"] ** 2 + row["target_reliance_se"] ** 2)
        if monitor is None and row["cue_reliance"] - row["target_reliance"] > 2 * se:
            monitor = row["step"]
        learnt = row["accuracy_val"] > chance + 0.10
        if held_out is None and learnt and row["accuracy_anti"] < row["accuracy_val"] - 0.10:
            held_out = row["step"]
    return {"monitor": monitor, "held_out": held_out}


def summarise(rows: list[dict[str, Any]], args: argparse.Namespace, chance: float) -> str:
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"Cue correlation {args.cue_correlation}, {len(seeds)} seeds, {args.epochs} epochs, "
        f"logged every {args.every} steps on {args.probes} in-distribution probes.",
        "",
        "| seed | monitor sees it at step | anti-split accuracy sees it at step | final val acc | "
        "final anti acc | final cue / target reliance | final shortcut / evidence share |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for seed in seeds:
        own = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["step"])
        found = detection_steps(own, chance)
        last = own[-1]
        lines.append(
            f"| {seed} | {found['monitor'] if found['monitor'] is not None else '-'} | "
            f"{found['held_out'] if found['held_out'] is not None else '-'} | "
            f"{last['accuracy_val']:.3f} | {last['accuracy_anti']:.3f} | "
            f"{last['cue_reliance']:.2f} / {last['target_reliance']:.2f} | "
            f"{last['shortcut_share']:.3f} / {last['evidence_share']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lico_lightning._io import atomic_write

    steps = sorted({r["step"] for r in rows})
    panels = [
        (
            "accuracy",
            [
                ("accuracy_val", "validation (in distribution)"),
                ("accuracy_anti", "anti split (held out)"),
            ],
        ),
        ("logit drop", [("cue_reliance", "cue reliance"), ("target_reliance", "target reliance")]),
        (
            "Grad-CAM mass share",
            [
                ("shortcut_share", "shortcut share (cue)"),
                ("evidence_share", "evidence share (target)"),
            ],
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (ylabel, series) in zip(axes, panels):
        for column, label in series:
            means, errs = [], []
            for step in steps:
                values = [r[column] for r in rows if r["step"] == step]
                means.append(statistics.fmean(values))
                errs.append(
                    statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
                )
            low = [m - e for m, e in zip(means, errs)]
            high = [m + e for m, e in zip(means, errs)]
            (line,) = ax.plot(steps, means, label=label)
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.25)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    from lico_lightning._io import write_text

    args = parse_args(argv)
    rows: list[dict[str, Any]] = []
    for i, seed in enumerate(args.seeds, 1):
        start = time.perf_counter()
        rows += run_seed(args, seed)
        print(
            f"[{i}/{len(args.seeds)}] seed {seed}: {(time.perf_counter() - start) / 60:.1f} min",
            flush=True,
        )
    chance = 1.0 / 3.0  # the recipe's three classes
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "runs.csv", _csv_text(rows))
    write_text(args.out / "summary.md", summarise(rows, args, chance))
    plot(
        rows,
        args.out / "summary.png",
        f"CE at cue correlation {args.cue_correlation}: mean ± s.e. over {len(args.seeds)} seeds, "
        f"{args.probes} probes",
    )
    print((args.out / "summary.md").read_text())
    return rows


if __name__ == "__main__":
    main()
