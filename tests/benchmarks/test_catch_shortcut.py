"""benchmarks/catch_shortcut.py: a tiny run and its resume, the logged accuracies against an
independent count, and the detection rules on hand-made rows."""

from __future__ import annotations

import csv
import math

import pytest
from tests.benchmarks._scripts import load_script


def _load():
    return load_script("catch_shortcut")


def _row(step, cue, target, se_cue, se_target, val, anti):
    return {
        "step": step,
        "cue_reliance": cue,
        "target_reliance": target,
        "cue_reliance_se": se_cue,
        "target_reliance_se": se_target,
        "accuracy_val": val,
        "accuracy_anti": anti,
    }


def test_detection_rules_fire_where_the_docstring_says():
    cs = _load()
    rows = [
        _row(4, 0.5, 0.4, 0.1, 0.1, 0.40, 0.35),  # cue ahead by 0.1 < 2·√0.02: not yet
        _row(8, 1.0, 0.4, 0.2, 0.1, 0.42, 0.20),  # 0.6 > 2·√0.05 = 0.447: monitor fires
        _row(12, 1.5, 0.5, 0.2, 0.2, 0.50, 0.30),  # val > 1/3 + 0.1 and anti < val − 0.1
    ]
    assert cs.detection_steps(rows, 1 / 3) == {"monitor": 8, "held_out": 12}
    # the held-out rule waits for validation accuracy above chance + 0.10
    assert cs.detection_steps(rows[:2], 1 / 3)["held_out"] is None
    flat = [_row(4, 0.2, 0.9, 0.1, 0.1, 0.9, 0.88)]
    assert cs.detection_steps(flat, 1 / 3) == {"monitor": None, "held_out": None}


@pytest.mark.slow
def test_tiny_run_writes_rows_plot_and_resumes(tmp_path, monkeypatch):
    cs = _load()
    argv = ["--seeds", "0", "--epochs", "1", "--num-train", "128", "--num-eval", "32",
            "--probes", "6", "--every", "2", "--out", str(tmp_path / "out"),
            "--work", str(tmp_path / "work")]  # fmt: skip
    rows = cs.main(argv)
    assert [r["step"] for r in rows] == [2]  # 128 scenes / batch 64 = 2 steps, logged at 2
    with open(tmp_path / "out" / "runs.csv") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == cs.COLUMNS and len(written) == 1
    for column in cs.MONITORED.values():
        assert math.isfinite(float(written[0][column])), column
    assert (tmp_path / "out" / "summary.png").stat().st_size > 0
    assert "| 0 |" in (tmp_path / "out" / "summary.md").read_text()

    # the logged accuracies are counts over the whole splits: a multiple of 1/32 in [0, 1]
    for column in ("accuracy_val", "accuracy_anti"):
        assert float(written[0][column]) * 32 == pytest.approx(
            round(float(written[0][column]) * 32)
        )

    # resume: the seed's rows are read back, nothing is built or trained
    import lico_lightning.cli

    monkeypatch.setattr(lico_lightning.cli, "build_cli", lambda *a, **k: pytest.fail("trained"))
    again = cs.main(argv)
    assert again == rows


def test_bad_arguments_are_one_line_errors(capsys):
    cs = _load()
    for argv, words in (
        (["--cue-correlation", "1.5"], "Expected --cue-correlation in [0, 1], but got 1.5"),
        (["--every", "0"], "Expected --every >= 1, but got 0"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            cs.parse_args(argv)
        assert exit_info.value.code == 2
        assert words in capsys.readouterr().err
