"""Plot retrieval R@1 and grounding PGA (own box vs distractor box) over a CLIP training run.

Reads the CSV log of a ``lico-clip fit`` run with a ``GroundingMonitor`` (e.g.
``recipes/clip_shapes.yaml``) and, with ``--config``, evaluates the *untrained* model of the
same recipe (the CLI builds it with the run's seed, so it is the run's initial weights) as the
step-0 point: validation R@1 and the monitor's grounding on the same probes.

    lico-clip fit --config recipes/clip_shapes.yaml
    python scripts/plot_clip_grounding.py outputs/clip_shapes/version_0/metrics.csv \\
        --config recipes/clip_shapes.yaml --out docs/clip_shapes_grounding.png \\
        --checkpoint outputs/clip_shapes/version_0/checkpoints/last.ckpt --num-probes 200

With ``--checkpoint`` and ``--num-probes``, the untrained and the trained model are also scored
on a larger probe set (the same probes for both), written into the figure.
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


def recipe_points(
    config: str, checkpoint: str | None = None, num_probes: int | None = None
) -> list[dict[str, float]]:
    """Validation values and the recipe's grounding of its untrained model (the run's initial
    weights: the CLI seeds them as in the run) and, with ``checkpoint``, of the trained one —
    on the same probes, ``num_probes`` of them (default: the recipe's)."""
    import torch

    from lico_lightning.callbacks import GroundingMonitor
    from lico_lightning.cli import build_clip_cli

    sys.argv = ["lico-clip"]
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        cli = build_clip_cli(
            [
                f"--config={config}",
                f"--trainer.logger.init_args.save_dir={tmp}",
                "--trainer.enable_progress_bar=false",
            ],
            run=False,
        )
        (monitor,) = [c for c in cli.trainer.callbacks if isinstance(c, GroundingMonitor)]
        monitor.log_images = False
        if num_probes is not None:
            monitor.num_probes = num_probes
        for state in (None, checkpoint) if checkpoint else (None,):
            if state is not None:
                weights = torch.load(state, map_location="cpu", weights_only=False)["state_dict"]
                cli.model.load_state_dict(weights)
            values = dict(cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0])
            monitor.last_epoch = -1  # run now, on the probes drawn the first time
            monitor.attach(cli.model, cli.datamodule.val_dataset)
            values.update(monitor.step(0, epoch=(monitor.every_n_epochs or 1) - 1))
            points.append(values)
    return points


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics_csv")
    parser.add_argument("--config", help="recipe of the run: adds the untrained model at step 0")
    parser.add_argument("--methods", nargs="+", help="methods to plot (default: all logged)")
    parser.add_argument("--checkpoint", help="with --config: also score this trained checkpoint")
    parser.add_argument(
        "--num-probes", type=int, help="with --config: probes of the untrained/trained check"
    )
    parser.add_argument("--out", default="docs/clip_shapes_grounding.png")
    args = parser.parse_args(argv)
    series = read_log(args.metrics_csv)
    check: list[dict[str, float]] = []
    if args.config:
        start = recipe_points(args.config)[0]  # the recipe's own probes: the step-0 point
        for key, value in start.items():
            series.setdefault(key, []).insert(0, (0, float(value)))
        print("untrained:", json.dumps({k: round(v, 4) for k, v in start.items()}))
        if args.checkpoint is not None:
            check = recipe_points(args.config, args.checkpoint, args.num_probes)
            for name, point in zip(("untrained", "trained"), check):
                print(
                    f"{name} ({args.num_probes or 'recipe'} probes):",
                    json.dumps(
                        {k: round(v, 4) for k, v in point.items() if k.startswith("grounding/")}
                    ),
                )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.9), dpi=120)
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
                colour = colours[i % len(colours)]
                right.plot(
                    steps, values, style, color=colour, markersize=3, label=f"{method}: {label}"
                )
                errors = dict(series.get(f"{key}_se", []))  # the monitor's standard errors
                if errors:
                    band = [(s, v, errors[s]) for s, v in zip(steps, values) if s in errors]
                    right.fill_between(
                        [b[0] for b in band],
                        [b[1] - b[2] for b in band],
                        [b[1] + b[2] for b in band],
                        color=colour,
                        alpha=0.15,
                        linewidth=0,
                    )
    right.set(
        xlabel="step",
        ylabel="PGA",
        ylim=(0, 1),
        title="grounding: the phrase map's peak in its box (± s.e.)",
    )
    if len(check) == 2:
        lines = [f"{args.num_probes or 'recipe'} probes, untrained → trained:"]
        for method in methods:
            own = [p.get(f"grounding/{method}/pga", float("nan")) for p in check]
            other = [p.get(f"grounding/{method}/pga_distractor", float("nan")) for p in check]
            lines.append(
                f"{method}: own {own[0]:.2f} → {own[1]:.2f}, distractor "
                f"{other[0]:.2f} → {other[1]:.2f}"
            )
        fig.text(0.53, 0.01, "\n".join(lines), va="bottom", fontsize=7)
    right.legend(fontsize=6.5, loc="upper right")
    fig.tight_layout(rect=(0, 0.12 if len(check) == 2 else 0, 1, 1))
    from lico_lightning._io import atomic_write

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, format="png")
    keys = ["val/R@1"] + [f"grounding/{m}/{k}" for m in methods for k in ("pga", "pga_distractor")]
    for key in keys:
        if key in series:
            print(f"{key}: " + ", ".join(f"{s}:{v:.3f}" for s, v in series[key]))
    return out


if __name__ == "__main__":
    main()
