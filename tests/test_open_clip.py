"""The one open_clip room (`lico_lightning._open_clip`): loading weights from both file kinds,
clear errors for unreadable files, and no other module of the package importing open_clip."""

from __future__ import annotations

import ast
from pathlib import Path

import open_clip
import pytest
import torch

from lico_lightning.modules import CLIPFineTuner, load_open_clip_weights
from lico_lightning.text import tiny_openclip_config

TINY = tiny_openclip_config(context_length=16)
PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lico_lightning"


def _open_clip_importers(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "open_clip" or n.startswith("open_clip.") for n in names):
                found.append(str(path.relative_to(root)))
    return sorted(set(found))


def test_only_the_open_clip_room_imports_open_clip():
    assert _open_clip_importers(PACKAGE) == ["_open_clip.py"]


def test_the_scan_finds_an_open_clip_import(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from open_clip.loss import ClipLoss\n")
    (tmp_path / "b.py").write_text("import torch\n")
    assert _open_clip_importers(tmp_path) == ["a.py"]


def test_loads_a_clip_finetuner_checkpoint_and_an_exported_state_dict(tmp_path) -> None:
    torch.manual_seed(1)
    tuner = CLIPFineTuner(model_cfg=TINY)
    # what Lightning writes: the module's state_dict under "state_dict"
    torch.save({"state_dict": tuner.state_dict(), "epoch": 3}, tmp_path / "tuner.ckpt")
    tuner.export_open_clip(tmp_path / "export.pt")
    for path in (tmp_path / "tuner.ckpt", tmp_path / "export.pt"):
        torch.manual_seed(2)
        clip = open_clip.CLIP(**TINY)
        load_open_clip_weights(clip, path)
        for key, value in tuner.model.state_dict().items():
            assert torch.equal(clip.state_dict()[key], value), key


def test_a_lico_clip_checkpoint_is_a_valid_pretrained_file(tmp_path) -> None:
    """A run's own checkpoint given as `CLIPFineTuner(pretrained=...)` (it listed missing
    `model.`-prefixed keys before): the new module starts from the run's weights."""
    torch.manual_seed(1)
    tuner = CLIPFineTuner(model_cfg=TINY)
    torch.save({"state_dict": tuner.state_dict(), "epoch": 3}, tmp_path / "last.ckpt")
    torch.manual_seed(2)
    resumed = CLIPFineTuner(model_cfg=TINY, pretrained=str(tmp_path / "last.ckpt"))
    for key, value in tuner.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_a_checkpoint_without_a_clip_model_is_rejected(tmp_path) -> None:
    torch.save({"state_dict": {"surrogate.net.weight": torch.zeros(1)}}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match=r"under 'model\.'"):
        load_open_clip_weights(open_clip.CLIP(**TINY), tmp_path / "x.ckpt")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated"], ids=["empty", "truncated"])
def test_an_unreadable_weights_file_is_named(tmp_path, content) -> None:
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"weights\.pt.*could not be read"):
        load_open_clip_weights(open_clip.CLIP(**TINY), path)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_open_clip_weights(open_clip.CLIP(**TINY), tmp_path / "missing.pt")
