"""benchmarks/metric_validity.py: a tiny end-to-end study, its resume, and the summary's
correlations against scipy."""

from __future__ import annotations

import csv

import pytest
from scipy.stats import spearmanr
from tests.benchmarks._scripts import load_script


def _load():
    return load_script("metric_validity")


@pytest.mark.slow
def test_tiny_study_writes_rows_and_resumes(tmp_path):
    mv = _load()
    argv = [
        "--seeds",
        "0",
        "--correlations",
        "0.9",
        "--checkpoints",
        "1",
        "--probes",
        "4",
        "--num-train",
        "64",
        "--batch-size",
        "32",
        "--rise-masks",
        "16",
        "--explainers",
        "gradcam",
        "random",
        "--out",
        str(tmp_path / "out"),
        "--work",
        str(tmp_path / "work"),
    ]
    rows = mv.main(argv)
    assert [r["explainer"] for r in rows] == ["gradcam", "random"]
    with open(tmp_path / "out" / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert all(f"| {m} |" in summary for m in mv.METRICS)
    weights = tmp_path / "work" / "corr0.9" / "seed0" / "epoch1.pt"
    stamp = weights.stat().st_mtime_ns
    again = mv.main(argv)  # resumes: nothing trained or evaluated again
    assert weights.stat().st_mtime_ns == stamp
    assert again == rows


def test_summary_is_spearman_with_the_lower_is_better_sign_flipped():
    mv = _load()
    rows = []
    for i in range(6):
        row = {m: float((i * 7 + j) % 5) for j, m in enumerate(mv.METRICS)}
        row.update(
            intervention_correctness=float(i),
            shortcut_reliance=float(5 - i),
            confidence=float((i * 3) % 4),
        )
        rows.append(row)
    table = mv.summarise(rows)
    # stated here, not read from the script: deletion / MoRF curves fall for a good explainer
    lower_is_better = {"deletion", "road_morf", "road_morf_normalized"}
    assert set(table) == set(mv.METRICS)
    for metric in mv.METRICS:
        values = [r[metric] for r in rows]
        sign = -1.0 if metric in lower_is_better else 1.0
        truth = [r["intervention_correctness"] for r in rows]
        assert table[metric]["evidence"] == pytest.approx(sign * spearmanr(values, truth)[0])
        reliance = [r["shortcut_reliance"] for r in rows]
        assert table[metric]["shortcut"] == pytest.approx(spearmanr(values, reliance)[0])
        conf = [r["confidence"] for r in rows]
        assert table[metric]["confidence"] == pytest.approx(sign * spearmanr(values, conf)[0])


def test_bad_arguments_end_in_one_line(capsys):
    mv = _load()
    with pytest.raises(SystemExit) as exit_info:
        mv.parse_args(["--correlations", "1.5"])
    assert exit_info.value.code == 2
    assert "Expected --correlations in [0, 1], but got 1.5" in capsys.readouterr().err
