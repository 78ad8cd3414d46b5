"""A checkpoint of one module of the package loaded into another says which class the file
belongs to, before building anything (issue 18 point 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lico_lightning.modules import CLIPFineTuner, LICOClassifier, SurrogateDistiller
from lico_lightning.modules._checkpoint import CLASS_KEY
from lico_lightning.text import tiny_openclip_config

CFG = tiny_openclip_config(context_length=16)


def _modules() -> dict[str, pl.LightningModule]:
    return {
        "CLIPFineTuner": CLIPFineTuner(model_cfg=CFG),
        "LICOClassifier": LICOClassifier(
            ["cat", "dog"],
            backbone="wrn28_2",
            backbone_kwargs={"depth": 10},
            image_size=16,
            text_encoder="openclip",
            text_encoder_kwargs={"model_cfg": tiny_openclip_config()},
            n_ctx=4,
            mapping_hidden_dim=16,
        ),
        "SurrogateDistiller": SurrogateDistiller(
            num_concepts=5, embed_dim=8, num_samples=4, clip_model=None
        ),
    }


def _save(module: pl.LightningModule, path: Path) -> Path:
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    return {name: _save(m, root / f"{name}.ckpt") for name, m in _modules().items()}


CLASSES = {"CLIPFineTuner": CLIPFineTuner, "LICOClassifier": LICOClassifier}
CLASSES["SurrogateDistiller"] = SurrogateDistiller


@pytest.mark.parametrize("owner", sorted(CLASSES))
@pytest.mark.parametrize("loader", sorted(CLASSES))
def test_a_checkpoint_names_its_class(checkpoints, owner, loader) -> None:
    path = checkpoints[owner]
    assert torch.load(path, weights_only=True)[CLASS_KEY] == owner
    if owner == loader:
        loaded = CLASSES[loader].load_from_checkpoint(path)
        assert type(loaded) is CLASSES[loader]
        return
    with pytest.raises(
        ValueError,
        match=rf"Expected .*{owner}\.ckpt to be a {loader} "
        rf"checkpoint, but got a checkpoint of {owner}",
    ):
        CLASSES[loader].load_from_checkpoint(path)


def test_an_older_checkpoint_is_told_by_its_hyperparameters(checkpoints, tmp_path) -> None:
    state = torch.load(checkpoints["SurrogateDistiller"], weights_only=True)
    del state[CLASS_KEY]
    torch.save(state, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match="but got a checkpoint of SurrogateDistiller"):
        CLIPFineTuner.load_from_checkpoint(tmp_path / "old.ckpt")
    assert type(SurrogateDistiller.load_from_checkpoint(tmp_path / "old.ckpt")) is (
        SurrogateDistiller
    )


def test_a_weights_file_is_not_a_checkpoint(tmp_path) -> None:
    torch.save({"visual.proj": torch.zeros(2)}, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="Lightning checkpoint with a 'state_dict'"):
        CLIPFineTuner.load_from_checkpoint(tmp_path / "weights.pt")
