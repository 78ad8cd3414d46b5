"""Every recipe in recipes/ parses and trains a few steps with tiny overrides (offline, CPU).

The overrides keep each recipe's model/data classes and settings but swap what needs data or
weights the CI machine does not have: a tiny random open_clip text tower instead of the
pretrained ViT-B-32 one, no ImageNet weights, fake CIFAR/SVHN datasets, a generated
ImageFolder tree, one CPU device.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lico_lightning.cli import build_cli
from lico_lightning.text import tiny_openclip_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("lico_*.yaml"))  # clip_*/explainr_*: own smoke tests

TINY_TRAINER = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--trainer.precision=32-true",
    "--trainer.enable_progress_bar=false",
]


@pytest.fixture(autouse=True)
def _clean_argv(monkeypatch):
    """LightningCLI warns when pytest's own argv sits beside explicit args."""
    monkeypatch.setattr(sys, "argv", ["lico-lightning"])


def _image_folder(root: Path, classes: list[str], per_class: int = 3, size: int = 40) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def _overrides(recipe: Path, tmp_path: Path) -> list[str]:
    cfg = yaml.safe_load(recipe.read_text())
    args = [*TINY_TRAINER, f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}"]
    data_class = cfg["data"]["class_path"].rsplit(".", 1)[-1]
    model = cfg["model"]
    if model.get("text_encoder") == "openclip":
        args.append(
            "--model.text_encoder_kwargs="
            + json.dumps({"model_cfg": tiny_openclip_config(), "pretrained": None})
        )
    if model.get("backbone_kwargs", {}).get("weights"):
        args.append("--model.backbone_kwargs={}")
    if data_class in {"CIFAR10DataModule", "CIFAR100DataModule", "SVHNDataModule"}:
        args += [
            f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.num_labels="
            + ("400" if data_class == "CIFAR100DataModule" else "40"),
            "--data.init_args.num_workers=0",
            "--data.init_args.batch_size=8",
        ]
    elif data_class in {"ImageNetDataModule", "CUB200DataModule"}:
        folder = tmp_path / "folder"
        _image_folder(folder, ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty"])
        args += [
            f"--data.init_args.data_dir={folder}",
            "--data.init_args.class_names_file=null",
            "--data.init_args.image_size=64",
            "--data.init_args.resize_size=72",
            "--data.init_args.num_workers=0",
            "--data.init_args.batch_size=3",
        ]
    elif data_class == "DigitsDataModule":
        args += ["--data.init_args.image_size=16", "--data.init_args.batch_size=16"]
    else:  # a new recipe must teach this test how to run it offline
        pytest.fail(f"no offline overrides for {data_class} in {recipe.name}")
    return args


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_trains_a_few_steps(recipe, tmp_path, fake_torchvision_datasets, fake_cifar_root):
    shutil.copytree(fake_cifar_root, tmp_path / "data")
    cli = build_cli(["fit", f"--config={recipe}", *_overrides(recipe, tmp_path)])
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 2
    for key in ("train/loss", "train/ce", "train/mm", "train/ot", "val/acc"):
        assert key in metrics, key
    # the model got the data module's class names and image size through the CLI links
    assert cli.model.class_names == cli.datamodule.class_names
    assert cli.model.hparams.image_size == cli.datamodule.image_size
    cfg = yaml.safe_load(recipe.read_text())["model"]
    assert cli.model.hparams.alpha == cfg["alpha"] and cli.model.hparams.beta == cfg["beta"]


def test_recipes_cover_the_paper_settings() -> None:
    names = {r.stem for r in RECIPES}
    assert {
        "lico_digits",
        "lico_cifar10_wrn",
        "lico_cifar100_wrn",
        "lico_svhn_wrn",
        "lico_imagenet_resnet50",
        "lico_cub_resnet50",
    } <= names
    for recipe in RECIPES:
        model = yaml.safe_load(recipe.read_text())["model"]
        assert model["lr"] == 0.03 and model["weight_decay"] == 1e-4, recipe.name
        assert model["alpha"] == 10.0 and model["beta"] == 1.0, recipe.name


def test_console_script_parses_the_readme_recipe() -> None:
    exe = Path(sys.executable).with_name("lico-lightning")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lico_lightning.cli"]
    out = subprocess.run(
        [*cmd, "fit", "--config", str(ROOT / "recipes" / "lico_digits.yaml"), "--print_config"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    cfg = yaml.safe_load(out)
    assert cfg["model"]["backbone"] == "wrn28_2"
    assert cfg["data"]["class_path"] == "lico_lightning.data.DigitsDataModule"


@pytest.mark.slow
def test_readme_digits_recipe_reaches_90_percent_validation_accuracy(tmp_path) -> None:
    """The README's main job, unchanged but for where it logs: > 90 % val accuracy."""
    recipe = ROOT / "recipes" / "lico_digits.yaml"
    cli = build_cli(
        [
            "fit",
            f"--config={recipe}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    best = cli.trainer.checkpoint_callback.best_model_score
    assert best is not None and float(best) > 0.9
    for key in ("train/ce", "train/mm", "train/ot"):
        assert key in cli.trainer.callback_metrics
    metrics_csv = Path(cli.trainer.logger.log_dir) / "metrics.csv"
    header = metrics_csv.read_text().splitlines()[0].split(",")
    assert {"train/ce", "train/mm", "train/ot", "val/acc"} <= set(header)


# ------------------------------------------------------------------ CLI behaviour (issue 11)
DIGITS = ROOT / "recipes" / "lico_digits.yaml"


def _digits_args(tmp_path: Path) -> list[str]:
    return [f"--config={DIGITS}", *_overrides(DIGITS, tmp_path)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--model.backbone=resnet19"],
            r"Expected a backbone name, but got 'resnet19'\. Available: .*wrn28_2",
        ),
        (
            [
                f"--config={ROOT / 'recipes' / 'lico_cifar10_wrn.yaml'}",
                "--data.init_args.data_dir=/nonexistent/cifar",
            ],
            r"Expected CIFAR-10 under data_dir='/nonexistent/cifar', but .* is missing",
        ),
        (
            [
                '--trainer.callbacks+={"class_path": "lico_lightning.callbacks.SaliencyMonitor", '
                '"init_args": {"methods": ["rise"], "explainer_kwargs": {"rise": {"num_maskz": 5}}}}'
            ],
            r"Expected options of the 'rise' explainer among \[.*'num_masks'.*\], but got 'num_maskz'",
        ),
    ],
    ids=["misspelt_backbone", "missing_data", "misspelt_explainer_option"],
)
def test_configuration_errors_end_with_one_clear_line(extra, message, tmp_path, capsys) -> None:
    from lico_lightning.cli import main

    args = ["fit", *_digits_args(tmp_path), "--trainer.fast_dev_run=true", *extra]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lico-lightning: error:")]
    assert len(lines) == 1 and "Traceback" not in err
    import re

    assert re.search(message, lines[0]), lines[0]


def test_fast_dev_run_writes_nothing_into_the_working_directory(tmp_path, monkeypatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    build_cli(["fit", *_digits_args(tmp_path), "--trainer.fast_dev_run=true"])
    assert list(cwd.rglob("*")) == []


@pytest.mark.slow
def test_test_stage_logs_next_to_the_checkpoints_run(tmp_path, recwarn) -> None:
    fit = build_cli(["fit", *_digits_args(tmp_path)])
    run = Path(fit.trainer.logger.log_dir)
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    recwarn.clear()
    test = build_cli(
        ["test", *_digits_args(tmp_path), f"--ckpt_path={ckpt}", "--trainer.limit_test_batches=1"]
    )
    assert Path(test.trainer.logger.log_dir) == run / "test"
    assert (run / "test" / "metrics.csv").exists()
    assert not [w for w in recwarn if "dirpath has changed" in str(w.message)]
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name]  # no new version folder
