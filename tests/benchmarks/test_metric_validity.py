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


def _state_rows(mv, states: int, per_state: int, metric_value) -> list[dict]:
    rows = []
    for k in range(states):
        for j in range(per_state):
            truth = float((k * 5 + j * 3) % 7)
            row = {m: metric_value(m, truth, k, j) for m in mv.METRICS}
            row.update(correlation=0.9, seed=k, epoch=1, intervention_correctness=truth,
                       shortcut_reliance=float(k), confidence=float((k * 3 + j) % 4))  # fmt: skip
            rows.append(row)
    return rows


def test_bootstrap_interval_is_one_point_for_a_perfect_metric_and_covers_the_estimate():
    mv = _load()
    lower = {"deletion", "road_morf", "road_morf_normalized"}
    perfect = _state_rows(mv, 6, 3, lambda m, t, k, j: -t if m in lower else t)
    intervals = mv.bootstrap_intervals(perfect, resamples=200)
    for metric in mv.METRICS:  # every resample ranks the metric exactly as the truth
        assert intervals[metric]["evidence"] == (pytest.approx(1.0), pytest.approx(1.0)), metric
    noisy = _state_rows(mv, 8, 3, lambda m, t, k, j: float((len(m) * 13 + k * 7 + j * 5) % 11))
    table = mv.summarise(noisy)
    intervals = mv.bootstrap_intervals(noisy, resamples=300)
    assert intervals == mv.bootstrap_intervals(noisy, resamples=300)  # seeded
    for metric in mv.METRICS:
        for key in ("evidence", "shortcut", "confidence"):
            low, high = intervals[metric][key]
            assert low <= table[metric][key] + 1e-9 and table[metric][key] - 1e-9 <= high
            assert low < high, (metric, key)  # eight states: resampling moves ρ


def test_bad_arguments_end_in_one_line(capsys):
    mv = _load()
    with pytest.raises(SystemExit) as exit_info:
        mv.parse_args(["--correlations", "1.5"])
    assert exit_info.value.code == 2
    assert "Expected --correlations in [0, 1], but got 1.5" in capsys.readouterr().err
