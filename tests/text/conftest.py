"""Shared tiny text encoders for the text tests (built once per session: fast, offline)."""

from __future__ import annotations

import open_clip
import pytest
import torch

from lico_lightning.text import HFTextEncoder, OpenCLIPTextEncoder, tiny_openclip_config


@pytest.fixture(scope="session")
def tiny_clip() -> open_clip.CLIP:
    """A tiny random open_clip CLIP (text width 32, 2 layers, CLIP's BPE vocabulary)."""
    torch.manual_seed(1234)
    model = open_clip.CLIP(**tiny_openclip_config())
    # open_clip initialises LayerNorms to identity; randomise them so a missed ln_final shows.
    with torch.no_grad():
        model.ln_final.weight.uniform_(0.5, 1.5)
        model.ln_final.bias.normal_(0.0, 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def clip_encoder(tiny_clip: open_clip.CLIP) -> OpenCLIPTextEncoder:
    return OpenCLIPTextEncoder(model=tiny_clip)


@pytest.fixture(scope="session")
def minilm_encoder() -> HFTextEncoder:
    return HFTextEncoder()
