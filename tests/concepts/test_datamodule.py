"""CLIP weights for EXPLAIN-R come from a CLIPFineTuner checkpoint or an exported state dict."""

from __future__ import annotations

import open_clip
import pytest
import torch

from lico_lightning.concepts import load_open_clip_weights
from lico_lightning.modules import CLIPFineTuner
from lico_lightning.text import tiny_openclip_config

TINY = tiny_openclip_config(context_length=16)


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


def test_a_checkpoint_without_a_clip_model_is_rejected(tmp_path) -> None:
    torch.save({"state_dict": {"surrogate.net.weight": torch.zeros(1)}}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match=r"under 'model\.'"):
        load_open_clip_weights(open_clip.CLIP(**TINY), tmp_path / "x.ckpt")
