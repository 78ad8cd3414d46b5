"""The ``lico-clip`` console script: LightningCLI over CLIPFineTuner and the caption data modules.

A second console script beside ``lico-lightning`` (which trains LICO classifiers): the two
share no model or data class, so one ``fit --help`` each reads more plainly than a union.

Usage::

    lico-clip fit --config recipes/clip_shapes.yaml
    lico-clip validate --config recipes/clip_shapes.yaml            # the untrained model
    lico-clip fit --config recipes/clip_coco_vit_b32.yaml --data.init_args.root /data/coco
    lico-clip test --config recipes/clip_coco_vit_b32.yaml --ckpt_path path/to.ckpt

The model's ``model_name`` / ``model_cfg`` are linked into the data module, so the images are
preprocessed and the captions tokenised for the model being trained.
"""

from __future__ import annotations

from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI

from lico_lightning.data import CaptionDataModule
from lico_lightning.modules import CLIPFineTuner

__all__ = ["CLIPCLI", "build_clip_cli", "main"]


class CLIPCLI(LightningCLI):
    """LightningCLI with the model's open_clip name / config linked into the data module."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.model_name", "data.init_args.model_name")
        parser.link_arguments("model.model_cfg", "data.init_args.model_cfg")


def build_clip_cli(args: ArgsType = None, run: bool = True) -> CLIPCLI:
    """Build (and by default run) the CLI; ``args`` as a list of strings or a dict."""
    return CLIPCLI(
        CLIPFineTuner,
        CaptionDataModule,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(args: ArgsType = None) -> None:
    """Entry point of the ``lico-clip`` console script."""
    build_clip_cli(args)


if __name__ == "__main__":  # pragma: no cover
    main()
