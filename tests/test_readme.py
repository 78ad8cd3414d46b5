"""Every ```python block of README.md runs, in order, in one namespace, with tiny settings.

Tiny settings come from the environment, not from edits of the text: every
``pytorch_lightning.Trainer`` a block builds trains 1 epoch of 2 batches on CPU without logger
or checkpoints, in a temporary working directory. A block may opt out only with a marker line
``# readme-test: skip -- <reason>`` (the reason is required and shown in the skip message).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import pytorch_lightning as pl

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_SKIP = re.compile(r"#\s*readme-test:\s*skip\b(.*)")
TINY = dict(
    max_epochs=1,
    max_steps=-1,
    limit_train_batches=2,
    limit_val_batches=1,
    limit_test_batches=1,
    num_sanity_val_steps=0,
    accelerator="cpu",
    devices=1,
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return [m.group(1) for m in _BLOCK.finditer(text)]


BLOCKS = python_blocks(README.read_text())
_NAMESPACE: dict = {"__name__": "__readme__"}


class _TinyTrainer(pl.Trainer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, **TINY})


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 1


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(index, tmp_path, monkeypatch) -> None:
    code = BLOCKS[index]
    marker = _SKIP.search(code)
    if marker:
        reason = marker.group(1).strip(" -—:")
        assert reason, f"README block {index}: a skip marker needs a reason"
        _NAMESPACE["__skipped__"] = True
        pytest.skip(f"README block {index}: {reason}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pl, "Trainer", _TinyTrainer)
    exec(compile(code, f"README.md[python block {index}]", "exec"), _NAMESPACE)


def test_skip_marker_requires_a_reason() -> None:
    assert (
        _SKIP.search("x = 1  # readme-test: skip -- needs a GPU").group(1).strip(" -—:")
        == "needs a GPU"
    )
    assert _SKIP.search("# readme-test: skip").group(1).strip(" -—:") == ""
    assert python_blocks("a\n```python\nx = 1\n```\n```bash\nls\n```\n") == ["x = 1\n"]
