"""Plot retrieval R@1 and grounding PGA (own box vs distractor box) over a CLIP training run.

Reads the CSV log of a ``lico-clip fit`` run with a ``GroundingMonitor`` (e.g.
``recipes/clip_shapes.yaml``) and, with ``--config``, evaluates the *untrained* model of the
same recipe (the CLI builds it with the run's seed, so it is the run's initial weights) as the
step-0 point: validation R@1 and the monitor's grounding on the same probes.

    lico-clip fit --config recipes/clip_shapes.yaml
    python scripts/plot_clip_grounding.py outputs/clip_shapes/version_0/metrics.csv \\
        --config recipes/clip_shapes.yaml --out docs/clip_shapes_grounding.png
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path


def read_log(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{column: [(step, value), ...]}`` of every non-empty cell of a Lightning CSV log."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                series.setdefault(key, []).append((step, float(value)))
    return series


def untrained_point(config: str) -> dict[str, float]:
    """Validation R@1 and grounding values of the recipe's untrained model (step 0)."""
    from lico_lightning.callbacks import GroundingMonitor
    from lico_lightning.clip_cli import build_clip_cli

    sys.argv = ["lico-clip"]
    with tempfile.TemporaryDirectory() as tmp:
        cli = build_clip_cli(
            [
                "validate",
                f"--config={config}",
                f"--trainer.logger.init_args.save_dir={tmp}",
                "--trainer.enable_progress_bar=false",
            ],
            run=False,
        )
        values = dict(cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0])
        for monitor in cli.trainer.callbacks:
            if isinstance(monitor, GroundingMonitor):
                monitor.log_images = False
                monitor.setup(cli.model, cli.datamodule.val_dataset)
                values.update(monitor.step(0, epoch=0))
    return values


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics_csv")
    parser.add_argument("--config", help="recipe of the run: adds the untrained model at step 0")
    parser.add_argument("--methods", nargs="+", help="methods to plot (default: all logged)")
    parser.add_argument("--out", default="docs/clip_shapes_grounding.png")
    args = parser.parse_args(argv)
    series = read_log(args.metrics_csv)
    if args.config:
        start = untrained_point(args.config)
        print("untrained:", json.dumps({k: round(v, 4) for k, v in start.items()}))
        for key, value in start.items():
            series.setdefault(key, []).insert(0, (0, float(value)))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=120)
    for key, style in (("val/R@1", "-o"), ("val/i2t_R@1", ":"), ("val/t2i_R@1", ":")):
        if key in series:
            steps, values = zip(*series[key])
            left.plot(steps, [100 * v for v in values], style, label=key, markersize=3)
    left.set(xlabel="step", ylabel="R@1 (%)", title="retrieval (validation)")
    left.legend(fontsize=7)
    methods = args.methods or sorted(
        {k.split("/")[1] for k in series if k.startswith("grounding/") and k.endswith("/pga")}
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, method in enumerate(methods):
        for metric, label, style in (
            ("pga", "own box", "-o"),
            ("pga_distractor", "distractor box", "--s"),
        ):
            key = f"grounding/{method}/{metric}"
            if key in series:
                steps, values = zip(*series[key])
                right.plot(
                    steps,
                    values,
                    style,
                    color=colours[i % len(colours)],
                    markersize=3,
                    label=f"{method}: {label}",
                )
    right.set(xlabel="step", ylabel="PGA", ylim=(0, 1), title="grounding: phrase map's peak in…")
    right.legend(fontsize=7)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    keys = ["val/R@1"] + [f"grounding/{m}/{k}" for m in methods for k in ("pga", "pga_distractor")]
    for key in keys:
        if key in series:
            print(f"{key}: " + ", ".join(f"{s}:{v:.3f}" for s, v in series[key]))
    return out


if __name__ == "__main__":
    main()
