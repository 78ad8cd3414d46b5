"""benchmarks/shortcut_losses.py: a tiny study (2 arms x 2 seeds, 2 training steps, tiny
splits) and its resume, each run's measures against a hand-written evaluation, and the summary
against scipy computed from runs.csv."""

from __future__ import annotations

import csv
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from tests.benchmarks._scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
#: tiny splits, 2 training steps: the data module below must match these
DATA = {"num_train": 64, "num_val": 16, "num_test": 32, "batch_size": 16}
TINY = [
    "--override",
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1",
    *(x for k, v in DATA.items() for x in (f"--data.init_args.{k}", str(v))),
]  # fmt: skip


def _load():
    return load_script("shortcut_losses")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _by_seed(rows: list[dict[str, str]], arm: str, metric: str) -> np.ndarray:
    """The arm's values of ``metric`` in seed order (the pairing)."""
    chosen = sorted((int(r["seed"]), float(r[metric])) for r in rows if r["arm"] == arm)
    return np.array([v for _, v in chosen])


def _check_summary_against_scipy(out: Path, metrics: list[str], baseline: str) -> None:
    """Every mean, 95 % interval, paired difference and p-value of summary.json, recomputed
    with numpy / scipy from runs.csv."""
    summary = json.loads((out / "summary.json").read_text())
    rows = _csv_rows(out / "runs.csv")
    correlations = sorted({r["correlation"] for r in rows}, key=float)
    assert sorted(summary["correlations"], key=float) == [f"{float(c):g}" for c in correlations]
    for corr in correlations:
        mine = [r for r in rows if r["correlation"] == corr]
        entry = summary["correlations"][f"{float(corr):g}"]["arms"]
        arms = sorted({r["arm"] for r in mine})
        assert sorted(entry) == arms
        for arm in arms:
            for metric in metrics:
                x = _by_seed(mine, arm, metric)
                got = entry[arm][metric]
                assert got["mean"] == pytest.approx(np.mean(x), rel=1e-9, abs=1e-12)
                if np.ptp(x) > 0:
                    low, high = stats.t.interval(0.95, len(x) - 1, np.mean(x), stats.sem(x))
                    assert got["ci95"] == pytest.approx((high - low) / 2, rel=1e-7)
                else:
                    assert got["ci95"] == 0.0
                if arm == baseline:
                    assert "vs_baseline" not in got
                    continue
                d = x - _by_seed(mine, baseline, metric)
                vs = got["vs_baseline"]
                assert vs["n"] == len(d)
                assert vs["diff"] == pytest.approx(np.mean(d), rel=1e-9, abs=1e-12)
                if np.ptp(d) > 0:  # a constant difference has no t-test
                    low, high = stats.t.interval(0.95, len(d) - 1, np.mean(d), stats.sem(d))
                    assert vs["ci95"] == pytest.approx((high - low) / 2, rel=1e-7)
                    p = stats.ttest_rel(x, _by_seed(mine, baseline, metric)).pvalue
                    assert vs["p"] == pytest.approx(p, rel=1e-7)
                else:
                    assert math.isnan(vs["p"])


def _independent_measures(model: torch.nn.Module, dm, probes: int) -> dict[str, float]:
    """Split accuracies, worst-group accuracy on the shifted split, reliances, confidence and
    Grad-CAM's evidence / shortcut shares, written out by hand from the benchmark's renders."""
    from lico_lightning.explain import build_explainers

    def predict(split: str) -> tuple[torch.Tensor, np.ndarray, list[dict]]:
        ds = dm.make_dataset(split)
        items = [ds[i] for i in range(len(ds))]
        with torch.no_grad():
            logits = model(torch.stack([it[0] for it in items]))
        return logits, np.array([int(it[1]) for it in items]), [it[2] for it in items]

    model.eval()
    out = {}
    for split in ("test", "shifted", "anti"):
        logits, y, gts = predict(split)
        hit = logits.argmax(1).numpy() == y
        out[f"accuracy_{split}"] = float(hit.mean())
        if split == "shifted":  # groups: label x (cue agrees)
            agrees = np.array([bool(gt["cue_agrees"]) for gt in gts])
            groups = [hit[(y == c) & (agrees == a)] for c in range(3) for a in (False, True)]
            out["worst_group_accuracy"] = min(float(g.mean()) for g in groups if g.size)
        if split == "test":
            top = torch.softmax(logits[:probes].double(), 1).max(1).values
            out["confidence"] = float(top.mean())
    test = dm.make_dataset("test")
    images = torch.stack([test[i][0] for i in range(probes)])
    labels = [int(test[i][1]) for i in range(probes)]
    for name, removed in (("cue_reliance", "cue"), ("target_reliance", "target")):
        drops = []
        with torch.no_grad():
            for i, label in enumerate(labels):
                logits = model(torch.stack([test.render(i), test.render(i, remove=(removed,))]))
                drops.append(float(logits[0, label] - logits[1, label]))
        out[name] = float(np.mean(drops))
    with torch.no_grad():
        predicted = model(images).argmax(1)
    explainer = build_explainers(model, ["gradcam"])["gradcam"]
    positive = explainer.attribute(images, predicted).detach().clamp_min(0).double().numpy()
    for name, key in (
        ("gradcam/evidence_share", "target_mask"),
        ("gradcam/shortcut_share", "cue_mask"),
    ):
        shares = []
        for i in range(probes):
            mask = test[i][2][key].numpy()
            total = positive[i].sum()
            shares.append(positive[i][mask].sum() / total if total > 0 else 0.0)
        out[name] = float(np.mean(shares))
    return out


class _Hashed(torch.nn.Module):
    """A CNN whose classes are a deterministic hash of its pooled features: predictions are
    spread over the classes, so every split's accuracy and worst group differ."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3 * torch.sin(2000 * self.head(self.conv(x).relu().mean((2, 3))))


def test_evaluate_run_equals_the_measures_by_hand():
    from lico_lightning.data import ShortcutDataModule

    sl = _load()
    torch.manual_seed(4)  # a draw whose splits differ in accuracy and worst group
    model = _Hashed()
    dm = ShortcutDataModule(cue_correlation=0.5, num_train=64, num_val=16, num_test=96)
    row = sl.evaluate_run(model, dm, probes=8)
    assert list(row) == sl.METRICS
    expected = _independent_measures(model, dm, probes=8)
    # this model tells the three splits apart (and their worst groups: 0.2, 0.28, 0.21)
    assert (
        len({expected["accuracy_test"], expected["accuracy_shifted"], expected["accuracy_anti"]})
        == 3
    )
    for key, value in expected.items():  # sin(2000 z) turns float32 rounding into ~1e-4
        assert row[key] == pytest.approx(value, abs=1e-3), key
    assert row["gradcam/overall"] == pytest.approx(
        row["gradcam/insertion"] - row["gradcam/deletion"], abs=1e-6
    )


@pytest.mark.slow
def test_tiny_study_measures_summary_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["shortcut_losses.py"])  # LightningCLI reads sys.argv too
    sl = _load()
    argv = [
        "--seeds", "0", "1",
        "--correlations", "0.9",
        "--only", "ce", "rrr",
        "--probes", "8",
        "--out", str(tmp_path / "out"),
        "--work", str(tmp_path / "work"),
        *TINY,
    ]  # fmt: skip
    summary = sl.main(argv)
    rows = _csv_rows(tmp_path / "out" / "runs.csv")
    assert sorted((r["arm"], r["seed"]) for r in rows) == [
        ("ce", "0"), ("ce", "1"), ("rrr", "0"), ("rrr", "1")
    ]  # fmt: skip
    assert set(sl.METRICS) <= set(rows[0])
    _check_summary_against_scipy(tmp_path / "out", sl.METRICS, "ce")
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "## cue correlation 0.9" in text and "| rrr | 2 |" in text
    assert (tmp_path / "out" / "summary.png").stat().st_size > 0
    assert not list((tmp_path / "out").glob("**/*.ckpt"))  # training runs stay in --work

    # the rrr arm trained with the RRR recipe's term, the ce arm without any
    run = tmp_path / "work" / "corr0.9"
    rrr = json.loads((run / "rrr" / "seed0" / "result.json").read_text())
    hparams = torch.load(rrr["checkpoint"], map_location="cpu", weights_only=False)
    assert hparams["hyper_parameters"]["explanation_losses"]["rrr"]["weight"] == 1000.0
    assert hparams["hyper_parameters"]["alpha"] == 0.0
    # the measures are the best checkpoint's, on the study's own splits
    from lico_lightning.data import ShortcutDataModule
    from lico_lightning.modules import LICOClassifier

    model = LICOClassifier.load_from_checkpoint(rrr["checkpoint"])
    dm = ShortcutDataModule(cue_correlation=0.9, seed=0, **DATA)
    for key, value in _independent_measures(model, dm, probes=8).items():
        assert rrr[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key

    # resumable: nothing trained or evaluated again
    stamp = (run / "ce" / "seed0" / "result.json").stat().st_mtime_ns
    assert sl.main(argv) == summary
    assert (run / "ce" / "seed0" / "result.json").stat().st_mtime_ns == stamp
    # a run stopped after training continues from its last.ckpt and gives the same row
    before = json.loads((run / "ce" / "seed1" / "result.json").read_text())
    (run / "ce" / "seed1" / "result.json").unlink()
    capsys.readouterr()
    sl.main(argv)
    assert "continuing from" in capsys.readouterr().out
    after = json.loads((run / "ce" / "seed1" / "result.json").read_text())
    for metric in sl.METRICS:
        assert after[metric] == pytest.approx(before[metric], abs=1e-6), metric


def test_summary_per_correlation_matches_scipy(tmp_path):
    """write_outputs on made-up rows of 2 correlations x 3 arms x 3 seeds (one arm at a
    constant difference): one table per correlation, statistics equal to scipy's."""
    sl = _load()
    args = sl.parse_args(
        ["--correlations", "0.9", "0.99", "--seeds", "0", "1", "2", "--out", str(tmp_path)]
    )
    rng = random.Random(0)
    rows = []
    for corr in (0.9, 0.99):
        for seed in (2, 0, 1):  # out of order: pairs go by seed, not by position
            for arm in ("ce", "lico", "rrr"):
                row = {"correlation": corr, "arm": arm, "seed": seed}
                row.update({m: rng.random() for m in sl.METRICS})
                row["accuracy_test"] = rng.randrange(512) / 1024  # exact sums below
                rows.append(row)
    for row in rows:  # rrr = ce + 0.25 on accuracy_test: a constant paired difference
        if row["arm"] == "rrr":
            ce = next(
                r
                for r in rows
                if (r["arm"], r["seed"], r["correlation"])
                == ("ce", row["seed"], row["correlation"])
            )
            row["accuracy_test"] = ce["accuracy_test"] + 0.25
    sl.write_outputs(args, rows)
    _check_summary_against_scipy(tmp_path, sl.METRICS, "ce")
    text = (tmp_path / "summary.md").read_text()
    assert text.count("| arm | n |") == 2
    assert text.index("## cue correlation 0.9\n") < text.index("## cue correlation 0.99\n")


def test_arms_take_the_rrr_term_from_its_recipe(tmp_path):
    sl = _load()
    args = sl.parse_args([])
    assert list(args.arms) == ["ce", "lico", "lico_ot_only", "rrr", "gradcam_mask", "lico_rrr"]
    term = json.loads(args.arms["rrr"][args.arms["rrr"].index("--model.explanation_losses") + 1])
    assert term == {
        "rrr": {"weight": 1000.0, "reduction": "mean", "mask_keys": ["cue_mask", "distractor_mask"]}
    }
    assert args.arms["lico_rrr"] == args.arms["rrr"][4:]  # LICO's alpha/beta left as they are
    recipe = tmp_path / "no_rrr.yaml"
    recipe.write_text("model:\n  alpha: 0.0\n")
    with pytest.raises(SystemExit):
        sl.parse_args(["--rrr-recipe", str(recipe)])


def test_bad_arguments_end_in_one_line(capsys):
    sl = _load()
    for argv, message in (
        (["--correlations", "1.5"], "Expected distinct --correlations in [0, 1], but got [1.5]"),
        (["--only", "rr"], "Expected --only arms among"),
        (["--seeds", "0", "0"], "Expected distinct non-negative --seeds"),
        (["--config", "nope.yaml"], "Expected --config to be a recipe file"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            sl.parse_args(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
