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

Errors in the configuration (an unknown backbone, a misspelt option, data that is not where
the recipe says) end the console script with one line, ``lico-lightning: error: ...``, and
exit status 2; set ``LICO_LIGHTNING_TRACEBACK=1`` to see the full traceback.

``--trainer.fast_dev_run`` writes no checkpoint (Lightning's ``ModelCheckpoint(save_last=True)``
would otherwise write ``./checkpoints/last.ckpt`` into the current directory), and
``lico-lightning test --ckpt_path <run>/checkpoints/x.ckpt`` logs into ``<run>/test`` (CSV and
TensorBoard loggers) instead of opening a new version folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pytorch_lightning import LightningDataModule
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI

from lico_lightning.modules import LICOClassifier

__all__ = ["LICOCLI", "build_cli", "main"]


class LICOCLI(LightningCLI):
    """LightningCLI with the data module's class names and image size linked into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.image_size", "model.image_size", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """For ``test`` / ``validate`` / ``predict`` from ``<run>/checkpoints/*.ckpt``: log into
        ``<run>/<subcommand>`` when the logger's save_dir/name point at that run."""
        if self.subcommand not in ("test", "validate", "predict"):
            return
        config = self.config[self.subcommand]
        ckpt = config.get("ckpt_path")
        logger = config.get("trainer", {}).get("logger")
        if not ckpt or not hasattr(logger, "get") or ckpt in ("best", "last", "hpc"):
            return
        run = Path(ckpt).resolve().parent
        if run.name != "checkpoints":
            return
        run = run.parent
        args = logger.get("init_args")
        if args is None or args.get("version") is not None or "save_dir" not in args:
            return
        expected = Path(args["save_dir"]).resolve() / str(args.get("name") or "")
        if run.parent == expected:
            args["version"] = f"{run.name}/{self.subcommand}"

    def before_fit(self) -> None:
        """``fast_dev_run`` saves no checkpoint, ``save_last`` included (nothing in the cwd)."""
        # set by Lightning's _init_debugging_flags, not declared on Trainer
        if self.trainer.fast_dev_run:  # type: ignore[attr-defined]
            for callback in self.trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint):
                    callback.save_last = False

    def _keep_checkpoint_dir(self) -> None:
        ckpt = self.config[self.subcommand].get("ckpt_path")
        if ckpt and ckpt not in ("best", "last", "hpc") and Path(ckpt).exists():
            # nothing is saved outside fit; pointing ModelCheckpoint at the checkpoint's own
            # folder lets it reload its state without "The dirpath has changed" warnings
            for callback in self.trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint):
                    callback.dirpath = str(Path(ckpt).resolve().parent)

    def before_test(self) -> None:
        self._keep_checkpoint_dir()

    def before_validate(self) -> None:
        self._keep_checkpoint_dir()


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


def _package_error(err: BaseException) -> BaseException | None:
    """The deepest exception of ``err``'s chain raised by lico_lightning's own checks."""
    package = str(Path(__file__).resolve().parent)
    found: BaseException | None = None
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None and tb.tb_frame.f_code.co_filename.startswith(package):
            if isinstance(current, (ValueError, TypeError, FileNotFoundError, ImportError)):
                found = current
        current = current.__cause__ or current.__context__
    return found


def main(args: ArgsType = None) -> None:
    """Entry point of the ``lico-lightning`` console script.

    A configuration error raised by the package's own checks (anywhere in the exception chain,
    e.g. wrapped by jsonargparse's "Does not validate against any of the Union subtypes") is
    printed as one line on stderr with exit status 2; ``LICO_LIGHTNING_TRACEBACK=1`` re-raises.
    """
    try:
        build_cli(args)
    except Exception as err:
        cause = _package_error(err)
        if cause is None or os.environ.get("LICO_LIGHTNING_TRACEBACK"):
            raise
        message = " ".join(str(cause).split())
        print(f"lico-lightning: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":  # pragma: no cover
    main()
