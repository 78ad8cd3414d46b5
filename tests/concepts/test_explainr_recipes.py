"""The EXPLAIN-R recipes parse and train a few steps offline (tiny CLIP, tiny data)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from lico_lightning.explainr_cli import build_explainr_cli
from lico_lightning.text import tiny_openclip_config

ROOT = Path(__file__).resolve().parents[2]
TINY = tiny_openclip_config(context_length=16)
TRAINER = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--model.block_size=6",
    "--data.batch_size=6",
    "--data.encode_batch_size=8",
    "--data.device=cpu",
]


@pytest.fixture(autouse=True)
def _clean_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["explainr"])


def check_run(cli) -> None:
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 2
    for key in ("train/loss", "train/kl", "val/faithfulness_i2t_r1", "val/performance_t2i_r5"):
        assert key in metrics and math.isfinite(float(metrics[key])), key
    assert cli.model.hparams.num_concepts == len(cli.datamodule.vocabulary)
    assert cli.model.hparams.embed_dim == TINY["embed_dim"]


@pytest.mark.slow
def test_shapes_recipe_trains_from_an_exported_clip(tmp_path) -> None:
    pytest.importorskip("spacy")
    torch.manual_seed(0)
    clip = open_clip.CLIP(**TINY)
    torch.save(clip.state_dict(), tmp_path / "clip.pt")  # as CLIPFineTuner.export_open_clip writes
    cfg = json.dumps(TINY)
    cli = build_explainr_cli(
        [
            "fit",
            f"--config={ROOT / 'recipes' / 'explainr_shapes.yaml'}",
            *TRAINER,
            f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
            f"--data.captions.init_args.model_cfg={cfg}",
            "--data.captions.init_args.num_train=24",
            "--data.captions.init_args.num_val=12",
            "--data.captions.init_args.num_test=2",
            f"--data.clip_model_cfg={cfg}",
            f"--data.clip_checkpoint={tmp_path / 'clip.pt'}",
            f"--data.cache_dir={tmp_path / 'cache'}",
        ]
    )
    check_run(cli)
    assert {"train_embeddings.pt", "val_embeddings.pt", "vocabulary.json"} <= {
        p.name for p in (tmp_path / "cache").iterdir()
    }
    labels = cli.datamodule.concept_labels
    assert {"red", "circle", "small"} <= set(labels), labels
    with torch.no_grad():  # the cache holds the loaded CLIP's embeddings
        image = cli.datamodule.captions.val_dataset.load_image(0)[None]
        torch.testing.assert_close(
            cli.datamodule.val_data.embeddings.image_embeds[:1], clip.encode_image(image)
        )


def fake_coco(root: Path, n: int = 12) -> None:
    rng = np.random.default_rng(0)
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    words = ["dog", "cat", "car", "tree", "man", "bike"]
    images, annotations = [], []
    for i in range(n):
        name = f"{i:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
            root / "val2017" / name
        )
        images.append({"id": i + 1, "file_name": name, "width": 48, "height": 40})
        for j in range(2):
            w = words[(i + j) % len(words)]
            annotations.append(
                {"id": 2 * i + j, "image_id": i + 1, "caption": f"a {w} near a {words[i % 3]}"}
            )
    (root / "annotations" / "captions_val2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations})
    )


@pytest.mark.slow
@pytest.mark.parametrize("augment", [False, True])
def test_coco_recipe_trains_on_a_fake_coco_folder(tmp_path, augment) -> None:
    fake_coco(tmp_path / "coco")
    cfg = json.dumps(TINY)
    cli = build_explainr_cli(
        [
            "fit",
            f"--config={ROOT / 'recipes' / 'explainr_coco_vit_b32.yaml'}",
            *TRAINER,
            "--trainer.check_val_every_n_epoch=1",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
            f"--data.captions.init_args.root={tmp_path / 'coco'}",
            f"--data.captions.init_args.model_cfg={cfg}",
            "--data.captions.init_args.num_workers=0",
            f"--data.clip_model_cfg={cfg}",
            f"--data.cache_dir={tmp_path / 'cache'}",
            "--data.tagger=words",  # no NLP package: plain words,
            "--data.lexicon=null",  # every word kept
            "--data.max_df=1.0",
            "--data.min_count=2",
            f"--data.augment={str(augment).lower()}",  # online: CLIP encodes crops each step
        ]
    )
    check_run(cli)
    assert ("dog", None) in cli.datamodule.vocabulary.concepts
    assert (cli.model.dual_encoder is not None) == augment
    cached = {p.name for p in (tmp_path / "cache").iterdir()}
    assert ("train_embeddings.pt" in cached) != augment  # online mode caches validation only
    dm = cli.datamodule
    if not augment:  # the cache holds the evaluation view, not one random training crop
        view = dm.captions.transform(False)
        record = dm.captions.train_dataset.records[0]
        with Image.open(record.image) as img, torch.no_grad():
            expected = dm.dual_encoder().encode_image(view(img.convert("RGB"))[None])
        torch.testing.assert_close(dm.train_data.embeddings.image_embeds[:1], expected)


def test_every_explainr_recipe_has_a_smoke_test() -> None:
    recipes = {p.name for p in (ROOT / "recipes").glob("explainr_*.yaml")}
    assert recipes == {"explainr_shapes.yaml", "explainr_coco_vit_b32.yaml"}
