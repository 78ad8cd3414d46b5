"""Plot retrieval R@K and the training loss of a `lico-clip fit` run from its CSV logs.

    python scripts/plot_clip_retrieval.py outputs/clip_shapes/version_1/metrics.csv \
        --untrained outputs/clip_shapes/version_0/metrics.csv --out docs/clip_shapes_retrieval.png

``--untrained`` is the metrics.csv of ``lico-clip validate`` on the same recipe before training
(same seed, so the same initial weights); its R@K are drawn at step 0.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a Lightning CSVLogger metrics.csv with the empty cells dropped."""
    with open(path, newline="") as f:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)
        ]


def series(rows: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` in logging order."""
    pairs = [(r.get("step", 0.0), r[key]) for r in rows if key in r]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", help="metrics.csv of the fit run")
    parser.add_argument("--untrained", help="metrics.csv of `lico-clip validate` before training")
    parser.add_argument("--out", default="clip_retrieval.png")
    parser.add_argument("--title", default="CLIP from scratch on generated shape scenes")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(args.metrics)
    start = read_metrics(args.untrained)[-1] if args.untrained else {}
    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    styles = {
        "val/i2t_R@1": "C0-",
        "val/t2i_R@1": "C1-",
        "val/i2t_R@5": "C0:",
        "val/t2i_R@5": "C1:",
    }
    labels = {"i2t": "image→text", "t2i": "text→image"}
    for key, style in styles.items():
        steps, values = series(rows, key)
        if key in start:
            steps, values = [0.0, *steps], [start[key], *values]
        direction, k = key.split("/")[1].split("_")
        ax.plot(
            steps,
            [100 * v for v in values],
            style,
            marker="o",
            ms=3,
            label=f"{labels[direction]} {k}",
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("recall on the validation split (%)")
    ax.set_title("retrieval (step 0 = untrained)" if start else "retrieval")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    steps, values = series(rows, "train/loss")
    ax_loss.plot(steps, values, "C2-", lw=1, label="train/loss")
    vsteps, vvalues = series(rows, "val/loss")
    ax_loss.plot(vsteps, vvalues, "C3o-", ms=3, label="val/loss (in-batch)")
    ax_loss.set_xlabel("training step")
    ax_loss.set_title("contrastive loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    fig.suptitle(args.title)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
