"""The README's "plug into my script" snippets run as written, with tiny settings: the plain
loop, Fabric and Lightning blocks in order, in one namespace, in a scratch directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Monitor saliency while training — plug into my script"
#: (README text, tiny replacement): each must occur in the section, so the test follows it.
TINY = [
    ("image_size=64, batch_size=64", "image_size=32, batch_size=8"),
    (
        "DataLoader(data.train_dataset, batch_size=64",
        "DataLoader(torch.utils.data.Subset(data.train_dataset, range(16)), batch_size=8",
    ),
    ("every_n_train_steps=100", "every_n_train_steps=2"),
    ("num_probes=16", "num_probes=3"),
    ("for epoch in range(3):", "for epoch in range(1):"),
    ("max_epochs=3,", "max_epochs=1, limit_train_batches=2, limit_val_batches=2,"),
]


def _blocks() -> list[str]:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    section = text[start:end]
    for old, new in TINY:
        assert old in section, f"README no longer contains {old!r}: update TINY"
        section = section.replace(old, new)
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_readme_monitoring_snippets_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks()
    assert len(blocks) == 4  # the script, plain loop, Fabric, Lightning
    assert all(
        b.startswith("# readme-test: skip") for b in blocks
    )  # the README-wide test skips them
    namespace: dict = {"__name__": "readme"}
    torch.manual_seed(0)
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)

    monitor_keys = {
        f"saliency/gradcam/{m}{se}" for m in ("deletion", "overall") for se in ("", "_se")
    }
    # plain loop: 2 steps -> one run at step 2, PNG under the run directory, state saved
    saved = torch.load(tmp_path / "runs" / "plain" / "last.pt", weights_only=False)
    assert saved["monitor"]["num_runs"] == 1 and saved["monitor"]["last_step"] == 2
    assert list((tmp_path / "runs" / "plain" / "saliency").glob("*.png"))
    # Fabric: two more steps on the same model, one run, PNG under its log_dir
    assert list((tmp_path / "runs" / "fabric" / "saliency").glob("*.png"))
    # Lightning: the values reached callback_metrics
    trainer = namespace["trainer"]
    assert monitor_keys <= set(trainer.callback_metrics)
    assert namespace["monitor"].num_runs == 1
    assert "tensor(" in capsys.readouterr().out
    # nothing was written outside the scratch directory's runs/
    assert {p.relative_to(tmp_path).parts[0] for p in tmp_path.iterdir()} == {"runs"}


@pytest.mark.parametrize("old,new", TINY)
def test_tiny_settings_only_shrink(old, new):
    """The replacements change sizes, never the API calls being documented."""
    words = lambda s: set(re.findall(r"[A-Za-z_]+(?=\()", s))  # noqa: E731
    assert words(old) <= words(new)
