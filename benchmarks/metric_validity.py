"""Which saliency metric tracks the evidence, and which tracks the model's confidence?

The study of issue 19 on the generated shortcut benchmark (``ShortcutDataModule``), where the
truth is known by construction:

1. **Models.** A CE classifier (WRN-28-2 at depth 10, 32 px) is trained per cue correlation
   (``--correlations``, default 0, 0.5, 0.9, 0.99) and seed (``--seeds``); its weights are kept
   after each epoch in ``--checkpoints`` (default 1, 3, 6): models at every stage of learning the
   shortcut.
2. **Ground truth per model state** (no explainer): on ``--probes`` in-distribution test scenes,
   the drop of the target logit when the scene is re-rendered without each object
   (``intervention_effect``): *cue reliance* and *target reliance*, and their share
   ``cue / (cue + target)`` (clipped at 0) — how much the model reads the shortcut; accuracy on
   the test, shifted and anti splits; the clean *confidence* (mean softmax probability of the
   explained class).
3. **Explanations** of every state by Grad-CAM, Grad-CAM++, Score-CAM, RISE and a random map
   (control), scored by every metric the monitors can log: insertion, deletion, overall (RISE
   protocol, 3.6 % steps), ROAD MoRF / LeRF and their SRG (``road_auc``), the confidence-normalised
   ROAD areas, the pointing game on the target box (tolerance 0 at 32 px), evidence share / shortcut share (energy
   pointing game on the target / cue mask), relevance rank accuracy on the target mask, and the
   explanation's own ground truth, *intervention correctness* (per image, Spearman between each
   object's true effect and its attributed mass).
4. **Validity.** Over all (state, explainer) rows: Spearman's ρ of each metric with intervention
   correctness ("tracks the evidence"), with the model's shortcut share ("sees the shortcut",
   for the region metrics) and with the clean confidence ("tracks confidence").

Writes ``runs.csv`` (one row per state × explainer), ``summary.md`` (the table) and
``summary.png`` under ``--out`` (default ``docs/metric_validity``); the training runs and every
evaluated row are cached under ``--work`` (default ``outputs/metric_validity``), so a stopped
study resumes where it stopped. Progress is printed per state.

Run (from a fresh clone, after the README's install):

    python benchmarks/metric_validity.py                       # the full study
    python benchmarks/metric_validity.py --seeds 0 --correlations 0.9 --checkpoints 1 --probes 8 \\
        --num-train 256 --out /tmp/v --work /tmp/vw             # a smoke run (about a minute)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

EXPLAINERS = ("gradcam", "gradcampp", "scorecam", "rise", "random")
METRICS = (
    "insertion",
    "deletion",
    "overall",
    "road_morf",
    "road_lerf",
    "srg",
    "road_morf_normalized",
    "road_lerf_normalized",
    "srg_normalized",
    "pointing_game",
    "evidence_share",
    "shortcut_share",
    "rank_accuracy",
)
#: metrics whose better direction is lower (their sign is flipped for "tracks the evidence")
LOWER_IS_BETTER = {"deletion", "road_morf", "road_morf_normalized"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--correlations", type=float, nargs="+", default=[0.0, 0.5, 0.9, 0.99])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--explainers", nargs="+", default=list(EXPLAINERS))
    parser.add_argument("--probes", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--rise-masks", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("docs/metric_validity"))
    parser.add_argument("--work", type=Path, default=Path("outputs/metric_validity"))
    args = parser.parse_args(argv)
    for c in args.correlations:
        if not 0.0 <= c <= 1.0:
            parser.error(f"Expected --correlations in [0, 1], but got {c}.")
    for name in args.explainers:
        if name not in EXPLAINERS:
            parser.error(f"Expected --explainers among {', '.join(EXPLAINERS)}, but got {name!r}.")
    if min(args.checkpoints) < 1 or args.probes < 2 or args.num_train < args.batch_size:
        parser.error(
            "Expected --checkpoints >= 1, --probes >= 2 and --num-train >= --batch-size, but got "
            f"{args.checkpoints}, {args.probes}, {args.num_train} and {args.batch_size}."
        )
    return args


# ----------------------------------------------------------------------------- training
def _data(args: argparse.Namespace, correlation: float, seed: int) -> Any:
    from lico_lightning.data import ShortcutDataModule

    return ShortcutDataModule(
        cue_correlation=correlation,
        num_train=args.num_train,
        num_val=64,
        num_test=max(args.probes, 256),
        batch_size=args.batch_size,
        seed=seed,
        with_ground_truth=False,
    )


def _model(num_classes: int) -> torch.nn.Module:
    from lico_lightning.models import create_backbone

    return create_backbone("wrn28_2", num_classes, depth=10)


def train(args: argparse.Namespace, correlation: float, seed: int) -> dict[int, Path]:
    """Train one CE model (SGD, cosine schedule over the last checkpoint epoch); keep its weights
    after every epoch in ``--checkpoints``. Finished epochs are not trained again."""
    folder = args.work / f"corr{correlation:g}" / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {e: folder / f"epoch{e}.pt" for e in args.checkpoints}
    if all(p.exists() for p in paths.values()):
        return paths
    torch.manual_seed(seed)
    dm = _data(args, correlation, seed)
    dm.setup("fit")
    model = _model(dm.num_classes)
    epochs = max(args.checkpoints)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    steps = epochs * math.ceil(args.num_train / args.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    from lico_lightning._io import save_torch

    for epoch in range(1, epochs + 1):
        model.train()
        for images, labels in dm.train_dataloader():
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        if epoch in paths:
            save_torch({"state_dict": model.state_dict(), "epoch": epoch}, paths[epoch])
    return paths


# ----------------------------------------------------------------------------- evaluation
def _random_map(images: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(images.shape[0], *images.shape[-2:], generator=g)


def evaluate_state(args: argparse.Namespace, correlation: float, seed: int, epoch: int, path: Path):
    """Rows (one per explainer) of one model state, cached as JSON beside its weights."""
    from lico_lightning._io import load_torch, write_text
    from lico_lightning.data import ShortcutDataset
    from lico_lightning.explain import create_explainer
    from lico_lightning.functional import (
        deletion_auc,
        energy_pointing_game,
        insertion_auc,
        intervention_correctness,
        intervention_effect,
        pointing_game,
        relevance_rank_accuracy,
        road_auc,
        target_probability,
    )

    cache = path.with_suffix(".json")
    rows: dict[str, dict[str, Any]] = {}
    if cache.exists():
        rows = json.loads(cache.read_text())
    todo = [e for e in args.explainers if e not in rows]
    if not todo:
        return [rows[e] for e in args.explainers]
    dm = _data(args, correlation, seed)
    model = _model(dm.num_classes)
    model.load_state_dict(load_torch(path, "a metric-validity model state")["state_dict"])
    model.eval()
    settings = dict(
        num_classes=dm.num_classes,
        cue_correlation=correlation,
        image_size=dm.image_size,
        mean=dm.mean,
        std=dm.std,
        seed=seed,
    )
    test = ShortcutDataset("test", max(args.probes, 256), **settings)
    items = [test[i] for i in range(args.probes)]
    images = torch.stack([it[0] for it in items])
    gt = {k: torch.stack([it[2][k] for it in items]) for k in items[0][2]}
    with torch.no_grad():
        logits = model(images)
        target = logits.argmax(1)  # the protocol explains the predicted class
        confidence = float(target_probability(logits, target).mean())
        counter = torch.stack([test.counterfactuals(i) for i in range(args.probes)])  # (B,O,3,H,W)
        b, o = counter.shape[:2]
        cf_logits = model(counter.flatten(0, 1)).view(b, o, -1)
        effects = intervention_effect(logits, cf_logits, target, reduction="none")  # (B, O)
    target_reliance = float(effects[:, 0].mean())
    cue_reliance = float(effects[:, 1].mean())
    share = max(cue_reliance, 0.0) / max(max(cue_reliance, 0.0) + max(target_reliance, 0.0), 1e-9)
    accuracy = {}
    for split in ("test", "shifted", "anti"):
        ds = ShortcutDataset(split, 256, with_ground_truth=False, **settings)
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        y = torch.stack([ds[i][1] for i in range(len(ds))])
        with torch.no_grad():
            accuracy[split] = float((model(x).argmax(1) == y).float().mean())
    base = {
        "correlation": correlation,
        "seed": seed,
        "epoch": epoch,
        "confidence": confidence,
        "target_reliance": target_reliance,
        "cue_reliance": cue_reliance,
        "shortcut_reliance": share,
        **{f"accuracy_{k}": v for k, v in accuracy.items()},
    }
    g = torch.Generator().manual_seed(seed)
    for name in todo:
        if name == "random":
            saliency = _random_map(images, seed + epoch)
        else:
            kwargs = {"num_masks": args.rise_masks} if name == "rise" else {}
            saliency = create_explainer(name, model, **kwargs).attribute(images, target).detach()
        morf, lerf = road_auc(model, images, saliency, target, generator=g, reduction="none")
        morf_n, lerf_n = road_auc(
            model, images, saliency, target, generator=g, normalize=True, reduction="none"
        )
        ins = insertion_auc(model, images, saliency, target, reduction="none")
        dele = deletion_auc(model, images, saliency, target, reduction="none")
        values = {
            "insertion": ins,
            "deletion": dele,
            "overall": ins - dele,
            "road_morf": morf,
            "road_lerf": lerf,
            "srg": lerf - morf,  # SRG = AUC(LeRF) - AUC(MoRF)
            "road_morf_normalized": morf_n,
            "road_lerf_normalized": lerf_n,
            "srg_normalized": lerf_n - morf_n,
            # tolerance 0: the protocol's 15 px would cover half of a 32 px scene
            "pointing_game": pointing_game(
                saliency, gt["target_box"], tolerance=0.0, reduction="none"
            ),
            "evidence_share": energy_pointing_game(saliency, gt["target_mask"], reduction="none"),
            "shortcut_share": energy_pointing_game(saliency, gt["cue_mask"], reduction="none"),
            "rank_accuracy": relevance_rank_accuracy(saliency, gt["target_mask"], reduction="none"),
        }
        correctness = intervention_correctness(
            saliency, gt["object_masks"], effects, reduction="none"
        )
        rows[name] = {
            **base,
            "explainer": name,
            "intervention_correctness": float(torch.nanmean(correctness)),
            **{k: float(torch.nanmean(v.float())) for k, v in values.items()},
        }
    write_text(cache, json.dumps(rows, indent=1))
    return [rows[e] for e in args.explainers]


# ----------------------------------------------------------------------------- summary
def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from lico_lightning.functional import spearman_correlation

    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return float("nan")
    a = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    b = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    return float(spearman_correlation(a, b, constant="zero"))


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per metric: ρ with intervention correctness (sign-flipped for lower-is-better metrics),
    with the models' shortcut reliance (region metrics), and with the clean confidence."""
    table = {}
    truth = [r["intervention_correctness"] for r in rows]
    reliance = [r["shortcut_reliance"] for r in rows]
    confidence = [r["confidence"] for r in rows]
    for metric in METRICS:
        values = [r[metric] for r in rows]
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        table[metric] = {
            "evidence": sign * _spearman(values, truth),
            "shortcut": _spearman(values, reliance),
            "confidence": sign * _spearman(values, confidence),
        }
    return table


def _state(row: dict[str, Any]) -> tuple[float, int, int]:
    return (row["correlation"], row["seed"], row["epoch"])


def bootstrap_intervals(
    rows: list[dict[str, Any]], resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, tuple[float, float]]]:
    """Percentile intervals of every ρ of :func:`summarise`, resampling whole model states
    (correlation, seed, epoch) with replacement — the rows of one state share its model, so
    they are not independent draws. ``(nan, nan)`` where fewer than half the resamples give a
    finite ρ."""
    import random

    states = sorted({_state(r) for r in rows})
    by_state: dict[tuple[float, int, int], list[dict[str, Any]]] = {s: [] for s in states}
    for row in rows:
        by_state[_state(row)].append(row)
    rng = random.Random(seed)
    draws: dict[str, dict[str, list[float]]] = {
        m: {"evidence": [], "shortcut": [], "confidence": []} for m in METRICS
    }
    for _ in range(resamples):
        sample = [row for s in rng.choices(states, k=len(states)) for row in by_state[s]]
        for metric, values in summarise(sample).items():
            for key, value in values.items():
                if math.isfinite(value):
                    draws[metric][key].append(value)
    tail = (1.0 - level) / 2.0
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for metric, keys in draws.items():
        out[metric] = {}
        for key, values in keys.items():
            if len(values) < resamples / 2:
                out[metric][key] = (float("nan"), float("nan"))
                continue
            values.sort()
            low = values[math.floor(tail * (len(values) - 1))]
            high = values[math.ceil((1.0 - tail) * (len(values) - 1))]
            out[metric][key] = (low, high)
    return out


def write_outputs(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    from lico_lightning._io import atomic_write, write_text

    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out / "runs.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = summarise(rows)
    intervals = bootstrap_intervals(rows)
    states = len({_state(r) for r in rows})
    lines = [
        f"Metric validity on the shortcut benchmark: {states} model states (cue correlations "
        f"{sorted({r['correlation'] for r in rows})}, seeds {sorted({r['seed'] for r in rows})}, "
        f"epochs {sorted({r['epoch'] for r in rows})}) × {len({r['explainer'] for r in rows})} "
        f"explainers = {len(rows)} rows, {args.probes} probes each. Spearman's ρ over the rows "
        "(lower-is-better metrics sign-flipped), with its 95 % interval from 1000 bootstrap "
        "resamples of the model states.",
        "",
        "| metric | ρ with intervention correctness (tracks the evidence) | ρ with the model's "
        "shortcut reliance | ρ with clean confidence (tracks confidence) |",
        "|---|---|---|---|",
    ]
    for metric, v in table.items():
        cells = [
            f"{v[k]:+.2f} [{intervals[metric][k][0]:+.2f}, {intervals[metric][k][1]:+.2f}]"
            for k in ("evidence", "shortcut", "confidence")
        ]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    write_text(args.out / "summary.md", "\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the [viz] extra
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = list(table)
    xs = range(len(names))
    for offset, key in ((-0.2, "evidence"), (0.2, "confidence")):
        heights = [table[n][key] for n in names]
        errors = [
            [h - intervals[n][key][0] for h, n in zip(heights, names)],
            [intervals[n][key][1] - h for h, n in zip(heights, names)],
        ]
        ax.bar([x + offset for x in xs], heights, 0.4, yerr=errors, capsize=2, label=key)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(list(xs), names, rotation=45, ha="right")
    ax.set_ylabel("Spearman's ρ (95 % bootstrap interval)")
    ax.set_title("Does the metric track the evidence or the model's confidence?")
    ax.legend()
    fig.tight_layout()
    with atomic_write(args.out / "summary.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows: list[dict[str, Any]] = []
    runs = [(c, s) for c in args.correlations for s in args.seeds]
    for k, (correlation, seed) in enumerate(runs, start=1):
        start = time.monotonic()
        paths = train(args, correlation, seed)
        for epoch, path in sorted(paths.items()):
            rows.extend(evaluate_state(args, correlation, seed, epoch, path))
        print(
            f"[{k}/{len(runs)}] correlation {correlation:g} seed {seed}: "
            f"{(time.monotonic() - start) / 60:.1f} min",
            flush=True,
        )
        write_outputs(args, rows)  # partial results are readable while the study runs
    return rows


if __name__ == "__main__":
    main()
