"""Every recipes/clip_*.yaml trains a few steps through `lico-clip` with tiny overrides (offline),
and the README's CLIP fine-tuning snippet runs.

The overrides keep each recipe's classes and settings but swap what needs data or weights the CI
machine does not have: a tiny random open_clip model instead of the pretrained ViT-B-32, tiny
generated COCO / Flickr30k Entities trees, one CPU device, full precision.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from tests.data.test_captions import make_tiny_coco, make_tiny_flickr30k_entities

from lico_lightning.clip_cli import build_clip_cli
from lico_lightning.text import tiny_openclip_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("clip_*.yaml"))

TINY_TRAINER = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.precision=32-true",
    "--trainer.enable_progress_bar=false",
]


@pytest.fixture(autouse=True)
def _clean_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lico-clip"])


def test_every_clip_recipe_is_covered() -> None:
    names = {r.name for r in RECIPES}
    assert names == {"clip_shapes.yaml", "clip_coco_vit_b32.yaml", "clip_flickr30k_entities.yaml"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_clip_recipe_smoke(recipe: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load(recipe.read_text())
    data_class = cfg["data"]["class_path"].rsplit(".", 1)[-1]
    args = ["fit", f"--config={recipe}", *TINY_TRAINER]
    args.append(f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}")
    args.append(f"--trainer.default_root_dir={tmp_path}")
    if cfg["model"].get("pretrained"):
        args += [
            "--model.model_cfg=" + json.dumps(tiny_openclip_config(context_length=32)),
            "--model.pretrained=null",
        ]
    if data_class == "ShapesCaptionDataModule":
        args += [
            "--data.init_args.num_train=16",
            "--data.init_args.num_val=8",
            "--data.init_args.batch_size=8",
        ]
    elif data_class == "COCOCaptionDataModule":
        make_tiny_coco(tmp_path / "coco")
        args += [f"--data.init_args.root={tmp_path / 'coco'}", "--data.init_args.num_workers=0"]
    elif data_class == "Flickr30kEntitiesDataModule":
        make_tiny_flickr30k_entities(tmp_path / "f30k")
        args += [f"--data.init_args.root={tmp_path / 'f30k'}", "--data.init_args.num_workers=0"]
    else:  # pragma: no cover - a new recipe must get its overrides here
        pytest.fail(f"no tiny overrides for {data_class}")
    cli = build_clip_cli(args)
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step >= 1
    assert {"train/loss", "val/i2t_R@1", "val/t2i_R@1", "val/R@1"} <= set(metrics)
    # a recipe's GroundingMonitor ran on the data's own probes and logged its metrics
    monitors = [
        c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("GroundingMonitor")
    ]
    for monitor in monitors:
        if monitor["init_args"].get("every_n_epochs", 1) > 1:  # not due in a 1-epoch smoke run
            continue
        for method in monitor["init_args"]["methods"]:
            for metric in ("pga", "pge"):
                assert f"grounding/{method}/{metric}" in metrics, sorted(metrics)
    # the recipe's settings survived the overrides
    assert cli.model.hparams.lr == cfg["model"]["lr"]
    assert cli.model.hparams.lock_text == cfg["model"].get("lock_text", False)


def test_readme_clip_snippet_runs(tmp_path: Path, monkeypatch) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Fine-tune CLIP", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "tiny_clip.pt").exists()
    assert "val/i2t_R@1" in namespace["trainer"].callback_metrics
