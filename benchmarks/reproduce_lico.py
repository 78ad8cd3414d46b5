"""LICO vs the cross-entropy baseline over several seeds, with intervals and paired tests.

Each *arm* is the recipe plus a few CLI overrides; each (arm, seed) run trains with
``lico-lightning fit`` (in process) and is then evaluated with the LICO Table-1 protocol on the
whole test split: accuracy, and for every saliency method the insertion / deletion / overall
(insertion − deletion) AUCs with the paper's 3.6 % steps (:func:`lico_lightning.evaluation.evaluate_saliency`).

The study is resumable: every finished run leaves ``{out}/{arm}/seed{seed}/result.json`` and is
skipped next time; a run that stopped mid-training continues from its ``last.ckpt``.

Outputs in ``--out``: ``runs.csv`` (one row per run), ``summary.md`` / ``summary.json`` (per arm
and metric: mean ± 95 % t-interval over seeds; against the baseline arm: the mean paired
difference with its 95 % interval and the paired t-test p-value) and ``summary.png``.

Usage::

    python benchmarks/reproduce_lico.py                                # LICO vs CE, 5 seeds
    python benchmarks/reproduce_lico.py --ablations                    # + MM only, OT only, τ learned, no dynamic context
    python benchmarks/reproduce_lico.py --seeds 0 1 --arm mine="--model.alpha 1"
    python benchmarks/reproduce_lico.py --seeds 0 --override --trainer.max_epochs 1   # quick look
    python benchmarks/reproduce_lico.py --ablations --jobs 2           # 2 runs at a time, 1 thread each

``--jobs N`` trains N runs at a time, each in its own process with ``cpu_count // N`` threads
and its output in ``{out}/{arm}/seed{seed}/run.log``; for a model as small as the digits
WRN-28-2, one thread is about as fast as two, so on a 2-core machine ``--jobs 2`` halves the
study's time. Results depend on the thread count only through floating-point summation order.

Seeds change the training seed (initialisation, augmentation, prompt shuffles) with the data
split fixed, so runs of different arms with the same seed are paired.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

#: The two arms of the claim. Overrides are lico-lightning CLI arguments.
MAIN_ARMS: dict[str, list[str]] = {
    "lico": [],
    "ce": ["--model.alpha", "0", "--model.beta", "0"],
}
#: Where a gain would come from (LICO Table 5 / Appendix G).
ABLATION_ARMS: dict[str, list[str]] = {
    "mm_only": ["--model.beta", "0"],
    "ot_only": ["--model.alpha", "0"],
    "tau_learned": ["--model.mm_kwargs", '{"learn_temperature": true}'],
    "static_context": ["--model.dynamic_context", "false"],
}
METRICS = ("insertion", "deletion", "overall")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="recipes/lico_digits.yaml", help="recipe to train")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=Path("outputs/reproduce_lico"))
    parser.add_argument(
        "--methods", nargs="+", default=["gradcam", "gradcampp"], help="saliency methods"
    )
    parser.add_argument(
        "--ablations", action="store_true", help=f"add the arms {sorted(ABLATION_ARMS)}"
    )
    parser.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar='NAME="OVERRIDES"',
        help='an extra arm: a name and CLI overrides, e.g. mine="--model.alpha 1"',
    )
    parser.add_argument(
        "--only", nargs="+", default=None, metavar="ARM", help="run only these arms"
    )
    parser.add_argument("--baseline", default="ce", help="arm the paired tests compare against")
    parser.add_argument(
        "--step-fraction", type=float, default=0.036, help="insertion/deletion step"
    )
    parser.add_argument(
        "--max-test-batches", type=int, default=None, help="evaluate on fewer test batches"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at a time, each in its own process with cpu_count // jobs threads",
    )
    # internal: one (arm, seed) run in a child process of --jobs; no summary
    parser.add_argument("--run", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--override",
        nargs=argparse.REMAINDER,
        default=[],
        help="CLI overrides applied to every run (put last)",
    )
    args = parser.parse_args(argv)
    if not Path(args.config).is_file():
        parser.error(f"Expected --config to be a recipe file, but got {args.config!r} (not found).")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"Expected distinct --seeds, but got {args.seeds}.")
    if args.jobs < 1:
        parser.error(f"Expected --jobs to be a positive integer, but got {args.jobs}.")
    arms = dict(MAIN_ARMS)
    if args.ablations:
        arms.update(ABLATION_ARMS)
    arms = select_arms(parser, arms, args.arm, args.only)
    if args.run is not None:
        arm, seed = args.run
        if arm not in arms or not seed.lstrip("-").isdigit():
            parser.error(
                f"Expected --run ARM SEED with ARM among {sorted(arms)}, but got {args.run}."
            )
        arms, args.seeds = {arm: arms[arm]}, [int(seed)]
    if args.baseline not in arms:
        args.baseline = None
    args.arms = arms
    return args


def select_arms(
    parser: argparse.ArgumentParser,
    arms: dict[str, list[str]],
    specs: Sequence[str],
    only: Sequence[str] | None,
) -> dict[str, list[str]]:
    """``arms`` plus every ``--arm NAME="OVERRIDES"`` of ``specs``, kept to ``only`` when given;
    a malformed spec or an unknown ``--only`` name is a parser error."""
    arms = dict(arms)
    for spec in specs:
        name, sep, overrides = spec.partition("=")
        if not sep or not name.isidentifier():
            parser.error(f'Expected --arm NAME="OVERRIDES", but got {spec!r}.')
        arms[name] = shlex.split(overrides)
    if only is not None:
        unknown = sorted(set(only) - set(arms))
        if unknown:
            parser.error(f"Expected --only arms among {sorted(arms)}, but got {unknown}.")
        arms = {k: v for k, v in arms.items() if k in only}
    return arms


def without_jobs(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--jobs N`` / ``--jobs=N`` removed (only before ``--override``)."""
    out: list[str] = []
    items = iter(argv)
    for item in items:
        if item == "--override":
            out += [item, *items]
            break
        if item == "--jobs":
            next(items, None)
        elif not item.startswith("--jobs="):
            out.append(item)
    return out


# ------------------------------------------------------------------------------------------
# one run
# ------------------------------------------------------------------------------------------
def _last_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob("**/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _test_scores(model: torch.nn.Module, loader: Any, max_batches: int | None) -> dict[str, float]:
    """Accuracy and confidence (mean softmax probability of the true class) on clean images.

    Insertion and deletion are AUCs of that same probability along a perturbation path, so a
    less confident model scores lower on both: read them with ``confidence`` beside them.
    """
    from lico_lightning.functional import target_probability

    correct = total = 0
    confidence = 0.0
    model.eval()
    with torch.no_grad():
        for index, batch in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            images, labels = batch[0], batch[1]
            logits = model(images)
            correct += int((logits.argmax(1) == labels).sum())
            confidence += float(target_probability(logits, labels).sum())
            total += int(labels.numel())
    return {"accuracy": correct / max(total, 1), "confidence": confidence / max(total, 1)}


def provenance() -> dict[str, Any]:
    """What a result depends on besides its arm and seed: code version and thread count."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"commit": commit, "torch": torch.__version__, "threads": torch.get_num_threads()}


def train_run(
    config: str | Path, run_dir: Path, seed: int, overrides: Sequence[str]
) -> tuple[Any, Any, str, float]:
    """Train one run with ``lico-lightning fit`` (in process), or continue it from its
    ``last.ckpt`` when an earlier attempt stopped; logs and checkpoints go under ``run_dir``.

    Returns:
        ``(model, datamodule, checkpoint, fit_seconds)``: the ``LICOClassifier`` at its best
        validation checkpoint (the last weights when there is none), the fitted data module,
        that checkpoint's path (``""`` when none) and the seconds ``fit`` took.
    """
    from lico_lightning.cli import build_cli
    from lico_lightning.modules import LICOClassifier

    run_dir.mkdir(parents=True, exist_ok=True)
    cli_args = [
        "fit",
        "--config",
        str(config),
        "--seed_everything",
        str(seed),
        "--trainer.logger.init_args.save_dir",
        str(run_dir),
        "--trainer.logger.init_args.name",
        "logs",
        "--trainer.logger.init_args.version",
        "0",
        "--trainer.enable_progress_bar",
        "false",
        *overrides,
    ]
    last = _last_checkpoint(run_dir)
    if last is not None:
        cli_args += ["--ckpt_path", str(last)]
        print(f"  continuing from {last}", flush=True)
    start = time.perf_counter()
    cli = build_cli(cli_args)
    fit_seconds = time.perf_counter() - start
    best = (
        cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else ""
    )
    model = LICOClassifier.load_from_checkpoint(best) if best else cli.model
    return model, cli.datamodule, str(best), fit_seconds


def run_one(args: argparse.Namespace, arm: str, overrides: list[str], seed: int) -> dict[str, Any]:
    """Train one (arm, seed) run (or continue it) and evaluate it; returns the result row."""
    from lico_lightning.evaluation import evaluate_saliency
    from lico_lightning.metrics import SaliencyMetricOptions

    result_file = _result_file(args, arm, seed)
    if result_file.is_file():
        return json.loads(result_file.read_text())
    model, datamodule, best, fit_seconds = train_run(
        args.config, result_file.parent, seed, [*overrides, *args.override]
    )
    datamodule.setup("test")
    loader = datamodule.test_dataloader()
    row: dict[str, Any] = {
        "arm": arm,
        "seed": seed,
        "checkpoint": str(best),
        "fit_seconds": round(fit_seconds, 1),
        **provenance(),
        **_test_scores(model, loader, args.max_test_batches),
    }
    values = evaluate_saliency(
        model,
        loader,
        methods=args.methods,
        metrics=METRICS,
        options=SaliencyMetricOptions(step_fraction=args.step_fraction),
        max_batches=args.max_test_batches,
        progress=True,
    )
    row.update(values)
    tmp = result_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=2))
    tmp.replace(result_file)  # a result file is whole or absent
    return row


# ------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------
def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the two-sided Student-t interval (half-width NaN for n < 2)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


def paired_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Mean of a − b over pairs, its 95 % half-width, and the paired t-test p-value."""
    from scipy import stats

    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean, half = mean_interval(diffs)
    if len(diffs) < 2 or all(d == diffs[0] for d in diffs):
        return mean, half, math.nan
    return mean, half, float(stats.ttest_rel(a, b).pvalue)


def summarise(rows: list[dict[str, Any]], metrics: list[str], baseline: str | None) -> dict:
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    by_arm = {arm: {r["seed"]: r for r in rows if r["arm"] == arm} for arm in arms}
    summary: dict[str, Any] = {"arms": {}, "baseline": baseline}
    for arm in arms:
        entry: dict[str, Any] = {"seeds": sorted(by_arm[arm])}
        for metric in metrics:
            values = [by_arm[arm][s][metric] for s in sorted(by_arm[arm])]
            mean, half = mean_interval(values)
            entry[metric] = {"mean": mean, "ci95": half, "values": values}
            if baseline is not None and arm != baseline and baseline in by_arm:
                seeds = sorted(set(by_arm[arm]) & set(by_arm[baseline]))
                if seeds:
                    a = [by_arm[arm][s][metric] for s in seeds]
                    b = [by_arm[baseline][s][metric] for s in seeds]
                    diff, diff_half, p = paired_test(a, b)
                    entry[metric]["vs_baseline"] = {
                        "diff": diff,
                        "ci95": diff_half,
                        "p": p,
                        "n": len(seeds),
                        "values": [x - y for x, y in zip(a, b)],  # per paired seed
                    }
        summary["arms"][arm] = entry
    return summary


def _fmt(mean: float, half: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def markdown_table(summary: dict, metrics: list[str]) -> str:
    baseline = summary["baseline"]
    head = "| arm | n | " + " | ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 2)]
    for arm, entry in summary["arms"].items():
        cells = []
        for metric in metrics:
            m = entry[metric]
            cell = _fmt(m["mean"], m["ci95"])
            if "vs_baseline" in m:
                d = m["vs_baseline"]
                p = "n/a" if math.isnan(d["p"]) else f"{d['p']:.2f}"
                cell += f" (Δ {d['diff']:+.3f}, p={p})"
            cells.append(cell)
        lines.append(f"| {arm} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
    note = (
        f"\nmean ± 95 % t-interval over seeds; Δ = mean paired difference to `{baseline}`, "
        "p = paired t-test."
        if baseline
        else "\nmean ± 95 % t-interval over seeds."
    )
    return "\n".join(lines) + "\n" + note + "\n"


def _better(metric: str, lower_is_better: Collection[str] = ()) -> str:
    if metric == "confidence":
        return "a diagnostic"
    lower = metric.endswith("deletion") or metric in lower_is_better
    return "lower is better" if lower else "higher is better"


def plot(
    summaries: Mapping[str, dict],
    metrics: list[str],
    path: Path,
    *,
    title: str = "LICO reproduction",
    lower_is_better: Collection[str] = (),
) -> None:
    """One panel per metric, four to a row, for one or more studies side by side.

    ``summaries`` maps a label to a :func:`summarise` result (one study: ``{"": summary}``;
    several, e.g. one per cue correlation: each is drawn in its own colour, offset, with its
    label in the legend). With a baseline, each panel shows every other arm's paired difference
    to it: one grey dot per seed, the mean with its 95 % interval in colour, and the zero line
    (no difference); the baseline's own mean ± interval is in the panel title. Without one, the
    values themselves. ``lower_is_better``: metrics whose panel title says so (besides the
    deletions).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - the table is the result; the plot is a view
        print("matplotlib is not installed (pip install -e '.[viz]'): no plot written.")
        return
    groups = list(summaries.items())
    baseline = groups[0][1]["baseline"]
    every = list(dict.fromkeys(arm for _, summary in groups for arm in summary["arms"]))
    arms = [arm for arm in every if arm != baseline]
    paired = bool(arms) and all(
        "vs_baseline" in summary["arms"][arm][metrics[0]]
        for _, summary in groups
        for arm in arms
        if arm in summary["arms"]
    )
    if not paired:
        arms = every
    colours = ["tab:red"] if len(groups) == 1 else [f"C{k}" for k in range(len(groups))]
    step = 0.6 / len(groups)
    columns = min(4, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    width = max(3.0, 0.55 * len(arms) * (1 + 0.5 * (len(groups) - 1)) + 1.2)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        for k, (label, summary) in enumerate(groups):
            offset = (k - (len(groups) - 1) / 2) * step
            for i, arm in enumerate(arms):
                if arm not in summary["arms"]:
                    continue
                m = summary["arms"][arm][metric]
                shown = m["vs_baseline"] if paired else m
                values, half = shown["values"], shown["ci95"]
                centre = shown["diff"] if paired else shown["mean"]
                x = i + offset
                ax.scatter([x] * len(values), values, s=14, alpha=0.6, color="tab:gray", zorder=2)
                err = 0 if math.isnan(half) else half
                ax.errorbar(x, centre, yerr=err, fmt="o", color=colours[k], capsize=4, zorder=3,
                            label=label if (label and i == 0) else None)  # fmt: skip
        ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right")
        ax.set_xlim(-0.6, len(arms) - 0.4)
        heading = f"{metric} ({_better(metric, lower_is_better)})"
        if paired:
            for label, summary in groups:
                b = summary["arms"][baseline][metric]
                heading += (
                    f"\n{label + ' ' if label else ''}{baseline}: {_fmt(b['mean'], b['ci95'])}"
                )
            ax.axhline(0.0, color="black", lw=0.8)
            ax.set_ylabel(f"Δ to {baseline}", fontsize=8)
        ax.set_title(heading, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    if len(groups) > 1:
        axes.flat[0].legend(fontsize=7)
    what = f"paired difference to {baseline}" if paired else "value"
    fig.suptitle(f"{title} — {what}: seeds (grey), mean ± 95 % CI (colour)")
    fig.tight_layout()
    from lico_lightning._io import atomic_write

    with atomic_write(path) as tmp:  # a PNG, whole or absent
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _result_file(args: argparse.Namespace, arm: str, seed: int) -> Path:
    return args.out / arm / f"seed{seed}" / "result.json"


def run_parallel(
    args: argparse.Namespace, argv: Sequence[str], jobs: list[tuple[str, int]]
) -> None:
    """Train the unfinished ``jobs`` ``args.jobs`` at a time, each in its own process: this
    script with ``--run ARM SEED`` (see :func:`run_processes`)."""
    tasks = [
        (
            f"{arm} seed {seed}",
            _result_file(args, arm, seed),
            [sys.executable, __file__, "--run", arm, str(seed), *without_jobs(argv)],
        )
        for arm, seed in jobs
    ]
    run_processes(tasks, args.jobs)


def run_processes(tasks: Sequence[tuple[str, Path, list[str]]], jobs: int) -> None:
    """Run the unfinished ``tasks`` ``jobs`` at a time, each in its own process.

    A task is ``(name, result_file, command)``: it is finished when its ``result_file`` exists
    (skipped), and its process writes that file; its output goes to ``run.log`` beside it.
    Each process gets ``cpu_count // jobs`` threads.
    Raises RuntimeError naming the tasks whose process failed, after the others finished.
    """
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    pending = [task for task in tasks if not task[1].is_file()]
    running: dict[str, tuple[subprocess.Popen, Any, float, Path]] = {}
    failed: list[str] = []
    finished = len(tasks) - len(pending)
    print(f"{finished}/{len(tasks)} runs done; {len(pending)} to train, {jobs} at a time "
          f"with {threads} thread(s) each", flush=True)  # fmt: skip
    try:
        while pending or running:
            while pending and len(running) < jobs:
                name, result_file, command = pending.pop(0)
                log_path = result_file.with_name("run.log")
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log = log_path.open("a")
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
                running[name] = (process, log, time.perf_counter(), result_file)
                print(f"  started {name} (log: {log_path})", flush=True)
            time.sleep(1.0)
            for name, (process, log, start, result_file) in list(running.items()):
                if process.poll() is None:
                    continue
                log.close()
                del running[name]
                finished += 1
                minutes = (time.perf_counter() - start) / 60
                if process.returncode == 0 and result_file.is_file():
                    status = "done"
                else:
                    status = f"FAILED (exit {process.returncode}; see {log.name})"
                    failed.append(name)
                print(f"[{finished}/{len(tasks)}] {name}: {status} in {minutes:.1f} min",
                      flush=True)  # fmt: skip
    finally:
        for process, log, _, _ in running.values():  # interrupted: stop the children too
            process.terminate()
            log.close()
    if failed:
        raise RuntimeError(f"Expected every run to finish, but these failed: {', '.join(failed)}.")


def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    if args.jobs > 1 and args.run is None:
        run_parallel(args, argv, jobs)
    rows = []
    for i, (arm, seed) in enumerate(jobs, 1):
        done = _result_file(args, arm, seed).is_file()
        print(f"[{i}/{len(jobs)}] {arm} seed {seed}{' (done)' if done else ''}", flush=True)
        rows.append(run_one(args, arm, args.arms[arm], seed))
    if args.run is not None:
        return {}
    metrics = ["accuracy", "confidence"] + [f"{m}/{k}" for m in args.methods for k in METRICS]
    with (args.out / "runs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=["arm", "seed", *metrics, "fit_seconds", "threads", "commit"]
        )
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in writer.fieldnames})
    summary = summarise(rows, metrics, args.baseline)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    table = markdown_table(summary, metrics)
    (args.out / "summary.md").write_text(table)
    plot({"": summary}, metrics, args.out / "summary.png")
    print(table)
    print(f"written: {args.out}/runs.csv, summary.md, summary.json, summary.png")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
