"""The ``lico-lightning`` console script: LightningCLI over LICOClassifier and our data modules.

Usage::

    lico-lightning fit --config recipes/lico_digits.yaml
    lico-lightning fit --config recipes/lico_digits.yaml --trainer.max_epochs 2
    lico-lightning test --config recipes/lico_digits.yaml --ckpt_path path/to.ckpt
    lico-lightning fit --help

Optimizers can be swapped with ``--optimizer``/``--lr_scheduler`` (LightningCLI); by default
the model's SGD + cos(7πk/16K) per-step schedule is used. The data module's ``class_names``
and ``image_size`` are linked into the model, so class names come from the dataset (override
them with ``--data.init_args.class_names``).
"""

from __future__ import annotations

from pytorch_lightning import LightningDataModule
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI

from lico_lightning.modules import LICOClassifier

__all__ = ["LICOCLI", "build_cli", "main"]


class LICOCLI(LightningCLI):
    """LightningCLI with the data module's class names and image size linked into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.image_size", "model.image_size", apply_on="instantiate")


def build_cli(args: ArgsType = None, run: bool = True) -> LICOCLI:
    """Build (and by default run) the CLI; ``args`` as a list of strings or a dict.

    Example (from the repository root; trains the digits recipe for one short epoch)::

        cli = build_cli(["fit", "--config", "recipes/lico_digits.yaml",
                         "--trainer.max_epochs", "1"])
        cli.trainer.callback_metrics["val/acc"]
    """
    return LICOCLI(
        LICOClassifier,
        LightningDataModule,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(args: ArgsType = None) -> None:
    """Entry point of the ``lico-lightning`` console script."""
    build_cli(args)


if __name__ == "__main__":  # pragma: no cover
    main()
