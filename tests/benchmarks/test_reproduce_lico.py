"""benchmarks/reproduce_lico.py: statistics against hand-computed references, and one tiny
end-to-end study (1 seed × 2 arms × a few steps) that must be resumable."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from tests.benchmarks._scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
#: one Grad-CAM over one test batch after 2 training steps: the tiny end of every study here
TINY = [
    "--methods", "gradcam",
    "--max-test-batches", "1",
    "--override",
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1",
    "--data.init_args.batch_size", "16",
]  # fmt: skip


def _load():
    return load_script("reproduce_lico")


def test_mean_interval_matches_the_t_formula_by_hand():
    rl = _load()
    values = [0.80, 0.82, 0.79, 0.85, 0.81]
    mean, half = rl.mean_interval(values)
    # hand: mean 0.814, sample sd, t_{0.975, 4} = 2.7764451051977987
    sd = math.sqrt(sum((v - 0.814) ** 2 for v in values) / 4)
    assert mean == pytest.approx(0.814)
    assert half == pytest.approx(2.7764451051977987 * sd / math.sqrt(5), rel=1e-9)
    assert math.isnan(rl.mean_interval([0.5])[1])


def test_paired_test_matches_the_paired_t_statistic_by_hand():
    from scipy import stats

    rl = _load()
    a, b = [0.9, 0.8, 0.85, 0.7], [0.8, 0.79, 0.8, 0.72]
    diff, half, p = rl.paired_test(a, b)
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)
    t = mean / (sd / 2)
    assert diff == pytest.approx(mean)
    assert p == pytest.approx(2 * stats.t.sf(abs(t), 3), rel=1e-9)
    assert half == pytest.approx(stats.t.ppf(0.975, 3) * sd / 2, rel=1e-9)


def test_summary_table_pairs_seeds_against_the_baseline():
    rl = _load()
    rows = [
        {"arm": "lico", "seed": 0, "accuracy": 0.9},
        {"arm": "lico", "seed": 1, "accuracy": 0.8},
        {"arm": "ce", "seed": 1, "accuracy": 0.7},
        {"arm": "ce", "seed": 0, "accuracy": 0.85},
    ]
    summary = rl.summarise(rows, ["accuracy"], "ce")
    vs = summary["arms"]["lico"]["accuracy"]["vs_baseline"]
    assert vs["n"] == 2 and vs["diff"] == pytest.approx(((0.9 - 0.85) + (0.8 - 0.7)) / 2)
    assert vs["values"] == pytest.approx([0.9 - 0.85, 0.8 - 0.7])  # per seed, in seed order
    assert "vs_baseline" not in summary["arms"]["ce"]["accuracy"]
    table = rl.markdown_table(summary, ["accuracy"])
    assert "| lico | 2 |" in table and "Δ +0.075" in table


def test_bad_arguments_exit_with_one_clear_line(capsys):
    rl = _load()
    with pytest.raises(SystemExit):
        rl.parse_args(["--config", "nope.yaml"])
    assert "Expected --config to be a recipe file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rl.parse_args(["--config", str(ROOT / "recipes/lico_digits.yaml"), "--only", "lcio"])
    assert "Expected --only arms among" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_study_runs_end_to_end_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["reproduce_lico.py"])  # LightningCLI reads sys.argv too
    rl = _load()
    argv = [
        "--seeds",
        "0",
        "--out",
        str(tmp_path),
        *TINY,
    ]
    summary = rl.main(argv)
    assert set(summary["arms"]) == {"lico", "ce"}
    for arm in ("lico", "ce"):
        row = json.loads((tmp_path / arm / "seed0" / "result.json").read_text())
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["gradcam/overall"] == pytest.approx(
            row["gradcam/insertion"] - row["gradcam/deletion"]
        )
        assert row["threads"] >= 1 and row["commit"]
    # accuracy and confidence against a plain softmax over the same (first) test batch
    from lico_lightning.data import DigitsDataModule
    from lico_lightning.modules import LICOClassifier

    row = json.loads((tmp_path / "lico" / "seed0" / "result.json").read_text())
    model = LICOClassifier.load_from_checkpoint(row["checkpoint"]).eval()
    data = DigitsDataModule(image_size=32, batch_size=16, augment=True, seed=0)
    data.setup("test")
    images, labels = next(iter(data.test_dataloader()))[:2]
    with torch.no_grad():
        probabilities = torch.softmax(model(images), dim=1)
    assert row["accuracy"] == pytest.approx(
        float((probabilities.argmax(1) == labels).float().mean())
    )
    assert row["confidence"] == pytest.approx(
        float(probabilities[torch.arange(len(labels)), labels].mean()), rel=1e-5
    )
    assert (tmp_path / "summary.md").read_text().startswith("| arm |")
    # resumable: a second call trains nothing and reads the same results
    mtime = (tmp_path / "lico" / "seed0" / "result.json").stat().st_mtime
    again = rl.main(argv)
    assert (tmp_path / "lico" / "seed0" / "result.json").stat().st_mtime == mtime
    assert again["arms"]["lico"]["accuracy"] == summary["arms"]["lico"]["accuracy"]


def test_without_jobs_drops_only_the_jobs_option_before_override():
    rl = _load()
    argv = ["--jobs", "2", "--seeds", "0", "--jobs=3", "--override", "--jobs", "5"]
    assert rl.without_jobs(argv) == ["--seeds", "0", "--override", "--jobs", "5"]
    with pytest.raises(SystemExit):
        rl.parse_args(["--jobs", "0"])


@pytest.mark.slow
def test_parallel_jobs_finish_the_good_runs_and_name_the_failed_one(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    rl = _load()
    argv = [
        "--seeds", "0",
        "--only", "ce", "bad",
        "--arm", "bad=--model.alpha -1",
        "--out", str(tmp_path),
        "--jobs", "2",
        *TINY,
    ]  # fmt: skip
    with pytest.raises(RuntimeError, match=r"failed: bad seed 0\."):
        rl.main(argv)
    assert (tmp_path / "ce" / "seed0" / "result.json").is_file()
    assert not (tmp_path / "bad" / "seed0" / "result.json").exists()
    assert "alpha" in (tmp_path / "bad" / "seed0" / "run.log").read_text()
    # the finished run is not trained again; without the failing arm the study summarises
    mtime = (tmp_path / "ce" / "seed0" / "result.json").stat().st_mtime
    summary = rl.main([a for a in argv if a not in ("bad", "bad=--model.alpha -1", "--arm")])
    assert (tmp_path / "ce" / "seed0" / "result.json").stat().st_mtime == mtime
    assert set(summary["arms"]) == {"ce"}
