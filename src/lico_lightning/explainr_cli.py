"""EXPLAIN-R from the command line: LightningCLI over SurrogateDistiller and its data module.

Usage::

    python -m lico_lightning.explainr_cli fit --config recipes/explainr_shapes.yaml
    python -m lico_lightning.explainr_cli fit --config recipes/explainr_coco_vit_b32.yaml \\
        --data.captions.init_args.root /data/coco
    python -m lico_lightning.explainr_cli validate --config ... --ckpt_path path/to.ckpt

The distiller reads its sizes (concepts, embedding width, training samples) and the concept
labels from the data module in ``setup``, so nothing needs linking.
"""

from __future__ import annotations

from pytorch_lightning.cli import ArgsType, LightningCLI

from lico_lightning.concepts.datamodule import ConceptDistillationDataModule
from lico_lightning.modules import SurrogateDistiller

__all__ = ["build_explainr_cli", "main"]


def build_explainr_cli(args: ArgsType = None, run: bool = True) -> LightningCLI:
    """Build (and by default run) the CLI; ``args`` as a list of strings or a dict."""
    return LightningCLI(
        SurrogateDistiller,
        ConceptDistillationDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(args: ArgsType = None) -> None:
    """Entry point (``python -m lico_lightning.explainr_cli``)."""
    build_explainr_cli(args)


if __name__ == "__main__":  # pragma: no cover
    main()
