"""Explanation-guided losses on the shortcut benchmark: CE, LICO, RRR, Grad-CAM mask, over seeds.

The study of issue 20 (item 4): where a gain is possible — a cue that predicts the label in
training but not at test time — does an explanation-guided loss stop the classifier from
reading it, and what does LICO do there?

**Arms** (``recipes/lico_shortcut.yaml`` plus CLI overrides; ``--arm NAME="OVERRIDES"`` adds
one, ``--only`` picks some):

* ``ce``: cross-entropy alone (``alpha = beta = 0``), the baseline every arm is paired with;
* ``lico``: the recipe's LICO (MM + OT, ``alpha = 10``, ``beta = 1``);
* ``lico_ot_only``: LICO without the manifold-matching term (``alpha = 0``);
* ``rrr``: CE + Right for the Right Reasons, the term of ``recipes/lico_shortcut_rrr.yaml``
  (read from that file: λ = 1000, per-sample mean, masks ``cue_mask | distractor_mask``);
* ``gradcam_mask``: CE + the Grad-CAM mask penalty (``weight 0.1``, ``reduction mean``, the
  setting the RRR recipe's comment gives);
* ``lico_rrr``: LICO + the RRR term.

Each arm runs at every cue correlation of ``--correlations`` (default the benchmark's 0.9 and
a harder 0.99, ``--data.init_args.cue_correlation``) and every seed of ``--seeds`` (default
0–4). A seed is the training seed (initialisation, data order, prompt shuffles) with the scenes
fixed (``data.seed`` of the recipe), so the runs of one seed are paired across arms.

**Per run**, on the model at its best validation accuracy (the in-distribution val split):

* ``accuracy_test`` / ``accuracy_shifted`` / ``accuracy_anti``: top-1 accuracy on the whole
  in-distribution test split, the *shifted* split (cue independent of the label) and the
  *anti* split (cue never agrees);
* ``worst_group_accuracy``: the lowest accuracy over the groups ``label × cue agrees``
  (:func:`lico_lightning.functional.group_accuracy`, Sagawa et al. 2020) on the shifted split,
  where every group is populated (on the test split at 0.99 a disagreeing group holds 1–2
  scenes);
* on the first ``--probes`` test scenes (default 256), through
  :func:`lico_lightning.evaluation.evaluate_saliency` with the scenes' counterfactual renders:
  ``cue_reliance`` / ``target_reliance`` (the drop of the label's logit when the scene is
  re-rendered without the cue / the target), and for Grad-CAM (explaining the predicted class,
  the RISE protocol): ``evidence_share`` / ``shortcut_share`` (share of the positive map on the
  target / the cue), ``intervention_correctness`` (Spearman between each object's true effect
  and its attributed mass), ``insertion`` / ``deletion`` / ``overall`` (3.6 % steps);
* ``confidence``: the mean softmax probability of the predicted class on those probes — the
  insertion and deletion curves are curves of that probability, so read them beside it.

**Summary** per (correlation, arm): mean ± 95 % t-interval over seeds, and against ``ce`` the
mean paired difference with its 95 % interval and the paired t-test p-value — the statistics,
table and plot of ``benchmarks/reproduce_lico.py``, imported from it.

**Outputs.** Training runs, their checkpoints, logs and per-run ``result.json`` under
``--work`` (default ``outputs/shortcut_losses``, ``corr{c}/{arm}/seed{s}/``); only the results
in ``--out`` (default ``docs/shortcut_losses``): ``runs.csv`` (every run's row),
``summary.md`` (one table per correlation), ``summary.json`` and ``summary.png`` (paired
differences to ``ce``, one colour per correlation). Resumable: a finished run (its
``result.json``) is skipped, a stopped one continues from its ``last.ckpt``. ``--jobs N`` trains
N runs at a time, each in its own process with ``cpu_count // N`` threads (log in the run's
``run.log``); progress is printed per run.

**Cost.** Measured (2026-12-07, the shared 2-core CPU machine at load average 4–5,
``OMP_NUM_THREADS=1``, seed 0, correlation 0.9, the recipe's 5 epochs on 2000 scenes plus this
script's evaluation): ``ce`` 1.4 min wall (fit 57 s, evaluation 20 s; 70 s of CPU), ``rrr``
3.8 min wall (fit 196 s, evaluation 26 s; 147 s of CPU). Not measured, estimated from the step
ratios: ``lico`` and ``lico_ot_only`` about 1.3× ``ce`` (a LICO step is 1.24× a CE step,
``benchmarks/bench_lico_step.py``), ``gradcam_mask`` at most ``rrr`` (its second backward
stops at the last feature map), ``lico_rrr`` about ``rrr`` + 0.5 min. That is 12–17 min of one
core per (correlation, seed) for the six arms: the 60 runs take 2–3 h on one core, about half
that with ``--jobs 2`` on two free cores (more on a loaded machine).

Run the full study from the repository root of a fresh clone, after the README's install
(``pip install -e ".[dev]"``)::

    python benchmarks/shortcut_losses.py --jobs 2

A quick look (two seeds, one epoch, 64 probes, in /tmp; about 3 min)::

    python benchmarks/shortcut_losses.py --seeds 0 1 --correlations 0.9 --only ce rrr \\
        --probes 64 --out /tmp/sl --work /tmp/slw --override --trainer.max_epochs 1
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce_lico as rl  # the sibling study: training, statistics, table, plot

#: The Grad-CAM settings of the Grad-CAM mask arm (recipes/lico_shortcut_rrr.yaml's comment).
GRADCAM_MASK = {"gradcam_mask": {"weight": 0.1, "reduction": "mean"}}
NO_LICO = ["--model.alpha", "0", "--model.beta", "0"]
#: Saliency metrics of Grad-CAM on the probes (``evaluate_saliency`` names).
SALIENCY = (
    "evidence_share",
    "shortcut_share",
    "intervention_correctness",
    "insertion",
    "deletion",
    "overall",
)
#: Every per-run measure, in table order.
METRICS = [
    "accuracy_test",
    "accuracy_shifted",
    "accuracy_anti",
    "worst_group_accuracy",
    "cue_reliance",
    "target_reliance",
    *(f"gradcam/{m}" for m in SALIENCY),
    "confidence",
]
#: Metrics where less is better (the plot's panel titles say so; deletions are known already).
LOWER_IS_BETTER = ("cue_reliance", "gradcam/shortcut_share")
ROOT = Path(__file__).resolve().parents[1]


def arms(rrr_recipe: Path) -> dict[str, list[str]]:
    """The study's arms: ``lico-lightning fit`` overrides of the LICO shortcut recipe, the RRR
    term read from ``rrr_recipe`` (its ``model.explanation_losses``)."""
    import yaml

    with open(rrr_recipe) as f:
        rrr = (yaml.safe_load(f).get("model") or {}).get("explanation_losses")
    if not isinstance(rrr, dict) or "rrr" not in rrr:
        raise ValueError(
            f"Expected {rrr_recipe} to set model.explanation_losses with an 'rrr' entry, but "
            f"got {rrr!r}."
        )
    rrr_term = ["--model.explanation_losses", json.dumps({"rrr": rrr["rrr"]})]
    return {
        "ce": NO_LICO,
        "lico": [],
        "lico_ot_only": ["--model.alpha", "0"],
        "rrr": [*NO_LICO, *rrr_term],
        "gradcam_mask": [*NO_LICO, "--model.explanation_losses", json.dumps(GRADCAM_MASK)],
        "lico_rrr": rrr_term,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=ROOT / "recipes/lico_shortcut.yaml")
    parser.add_argument(
        "--rrr-recipe",
        type=Path,
        default=ROOT / "recipes/lico_shortcut_rrr.yaml",
        help="recipe whose model.explanation_losses.rrr the rrr arms use",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--correlations", type=float, nargs="+", default=[0.9, 0.99])
    parser.add_argument(
        "--probes", type=int, default=256, help="test scenes for reliance and explanations"
    )
    parser.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar='NAME="OVERRIDES"',
        help='an extra arm: a name and CLI overrides, e.g. rrr10="--model.alpha 0 ..."',
    )
    parser.add_argument("--only", nargs="+", default=None, metavar="ARM", help="only these arms")
    parser.add_argument("--baseline", default="ce", help="arm the paired tests compare against")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at a time")
    parser.add_argument("--out", type=Path, default=Path("docs/shortcut_losses"))
    parser.add_argument("--work", type=Path, default=Path("outputs/shortcut_losses"))
    # internal: one (correlation, arm, seed) run in a child process of --jobs; no summary
    parser.add_argument("--run", nargs=3, metavar=("CORR", "ARM", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--override",
        nargs=argparse.REMAINDER,
        default=[],
        help="CLI overrides applied to every run (put last)",
    )
    args = parser.parse_args(argv)
    for name in ("config", "rrr_recipe"):
        if not getattr(args, name).is_file():
            parser.error(
                f"Expected --{name.replace('_', '-')} to be a recipe file, but got "
                f"{str(getattr(args, name))!r} (not found)."
            )
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        parser.error(f"Expected distinct non-negative --seeds, but got {args.seeds}.")
    if any(not 0.0 <= c <= 1.0 for c in args.correlations) or len(
        {f"{c:g}" for c in args.correlations}
    ) != len(args.correlations):
        parser.error(f"Expected distinct --correlations in [0, 1], but got {args.correlations}.")
    if args.probes < 2:
        parser.error(f"Expected --probes >= 2, but got {args.probes}.")
    if args.jobs < 1:
        parser.error(f"Expected --jobs to be a positive integer, but got {args.jobs}.")
    try:
        table = arms(args.rrr_recipe)
    except ValueError as err:
        parser.error(str(err))
    table = rl.select_arms(parser, table, args.arm, args.only)
    if args.run is not None:
        corr, arm, seed = args.run
        try:
            args.correlations, args.seeds = [float(corr)], [int(seed)]
        except ValueError:
            parser.error(f"Expected --run CORR ARM SEED, but got {args.run}.")
        if arm not in table:
            parser.error(f"Expected --run's ARM among {sorted(table)}, but got {arm!r}.")
        table = {arm: table[arm]}
    if args.baseline not in table:
        args.baseline = None
    args.arms = table
    return args


# ------------------------------------------------------------------------------------------
# one run
# ------------------------------------------------------------------------------------------
def result_file(args: argparse.Namespace, correlation: float, arm: str, seed: int) -> Path:
    return args.work / f"corr{correlation:g}" / arm / f"seed{seed}" / "result.json"


def _predict(model: torch.nn.Module, dataset: Any) -> tuple[torch.Tensor, ...]:
    """``(logits, labels, groups)`` of a whole shortcut split (eval mode, no gradient)."""
    from torch.utils.data import DataLoader

    from lico_lightning.evaluation import parse_ground_truth

    logits, labels, groups = [], [], []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=250):
            logits.append(model(batch[0]))
            labels.append(batch[1])
            groups.append(parse_ground_truth(batch)["group"])
    return torch.cat(logits), torch.cat(labels), torch.cat(groups)


def evaluate_run(model: torch.nn.Module, datamodule: Any, probes: int) -> dict[str, float]:
    """Every per-run measure of the module docstring, for a trained model on its benchmark."""
    from torch.utils.data import DataLoader, Subset

    from lico_lightning.evaluation import evaluate_saliency
    from lico_lightning.functional import group_accuracy, target_probability

    model.eval()
    row: dict[str, float] = {}
    for split in ("test", "shifted", "anti"):
        logits, labels, groups = _predict(model, datamodule.make_dataset(split))
        row[f"accuracy_{split}"] = float((logits.argmax(1) == labels).float().mean())
        if split == "test":
            first = logits[:probes]  # the probes: the explained class and its probability
            confidence = float(target_probability(first, first.argmax(1)).mean())
        if split == "shifted":
            row["worst_group_accuracy"] = float(
                group_accuracy(logits, labels, groups, datamodule.num_groups)
            )
    test = datamodule.make_dataset("test", with_counterfactuals=True)
    loader = DataLoader(Subset(test, range(min(probes, len(test)))), batch_size=64)
    values = evaluate_saliency(
        model,
        loader,
        methods=["gradcam"],
        metrics=SALIENCY,
        model_metrics=["cue_reliance", "target_reliance"],
        progress=False,
    )
    row.update(values)
    row["confidence"] = confidence
    return {key: row[key] for key in METRICS}


def run_one(args: argparse.Namespace, correlation: float, arm: str, seed: int) -> dict[str, Any]:
    """Train one (correlation, arm, seed) run (or continue it), evaluate it, keep its row."""
    from lico_lightning._io import write_text

    path = result_file(args, correlation, arm, seed)
    if path.is_file():
        return json.loads(path.read_text())
    overrides = [
        "--data.init_args.cue_correlation",
        str(correlation),
        *args.arms[arm],
        *args.override,
    ]
    model, datamodule, checkpoint, fit_seconds = rl.train_run(
        args.config, path.parent, seed, overrides
    )
    start = time.perf_counter()
    values = evaluate_run(model, datamodule, args.probes)
    row: dict[str, Any] = {
        "correlation": correlation,
        "arm": arm,
        "seed": seed,
        **values,
        "fit_seconds": round(fit_seconds, 1),
        "eval_seconds": round(time.perf_counter() - start, 1),
        "checkpoint": checkpoint,
        **rl.provenance(),
    }
    write_text(path, json.dumps(row, indent=2))  # a result file is whole or absent
    return row


# ------------------------------------------------------------------------------------------
# the study
# ------------------------------------------------------------------------------------------
def write_outputs(args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``runs.csv``, ``summary.md``/``.json`` and ``summary.png`` in ``--out``; returns the
    summary ``{"correlations": {"0.9": reproduce_lico.summarise(...), ...}, ...}``."""
    from lico_lightning._io import atomic_write, write_text

    args.out.mkdir(parents=True, exist_ok=True)
    fields = ["correlation", "arm", "seed", *METRICS, "fit_seconds", "eval_seconds", "threads",
              "commit"]  # fmt: skip
    with atomic_write(args.out / "runs.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in fields})
    summaries = {
        f"{c:g}": rl.summarise([r for r in rows if r["correlation"] == c], METRICS, args.baseline)
        for c in args.correlations
    }
    summary = {"correlations": summaries, "metrics": METRICS, "probes": args.probes}
    write_text(args.out / "summary.json", json.dumps(summary, indent=2))
    parts = [
        f"Explanation-guided losses on the shortcut benchmark ({args.config.name}; seeds "
        f"{args.seeds}; {args.probes} test probes for the reliances and Grad-CAM measures; "
        "accuracies on the whole splits, worst group on the shifted split)."
    ]
    for corr, entry in summaries.items():
        parts += [f"## cue correlation {corr}", rl.markdown_table(entry, METRICS)]
    table = "\n\n".join(parts) + "\n"
    write_text(args.out / "summary.md", table)
    rl.plot(
        {f"correlation {c}": s for c, s in summaries.items()},
        METRICS,
        args.out / "summary.png",
        title="Explanation-guided losses on the shortcut benchmark",
        lower_is_better=LOWER_IS_BETTER,
    )
    print(table)
    print(f"written: {args.out}/runs.csv, summary.md, summary.json, summary.png")
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    jobs = [(c, arm, s) for c in args.correlations for s in args.seeds for arm in args.arms]
    if args.jobs > 1 and args.run is None:
        child = [sys.executable, __file__, "--run"]
        tasks = [
            (
                f"correlation {c:g} {arm} seed {s}",
                result_file(args, c, arm, s),
                [*child, f"{c:g}", arm, str(s), *rl.without_jobs(argv)],
            )
            for c, arm, s in jobs
        ]
        rl.run_processes(tasks, args.jobs)
    rows = []
    for i, (correlation, arm, seed) in enumerate(jobs, 1):
        done = result_file(args, correlation, arm, seed).is_file()
        print(f"[{i}/{len(jobs)}] correlation {correlation:g} {arm} seed {seed}"
              f"{' (done)' if done else ''}", flush=True)  # fmt: skip
        start = time.perf_counter()
        rows.append(run_one(args, correlation, arm, seed))
        if not done:
            print(f"  finished in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    if args.run is not None:
        return {}
    return write_outputs(args, rows)


if __name__ == "__main__":
    main(sys.argv[1:])
