"""The console scripts: one hardened LightningCLI base and the three stories built on it.

* ``lico-lightning``: :class:`~lico_lightning.modules.LICOClassifier` on an image data module;
* ``lico-clip``: :class:`~lico_lightning.modules.CLIPFineTuner` on a caption data module;
* ``lico-explainr``: :class:`~lico_lightning.modules.SurrogateDistiller` (EXPLAIN-R) on a
  caption data module.

Usage::

    lico-lightning fit --config recipes/lico_digits.yaml --trainer.max_epochs 2
    lico-lightning test --config recipes/lico_digits.yaml --ckpt_path path/to.ckpt
    lico-clip fit --config recipes/clip_coco_vit_b32.yaml --data.init_args.root /data/coco
    lico-explainr fit --config recipes/explainr_coco_vit_b32.yaml --data.init_args.root /data/coco
    lico-clip fit --help

The two caption stories take their data the same way (``--data.class_path`` /
``--data.init_args.*`` of a :class:`~lico_lightning.data.CaptionDataModule`); the model's
open_clip name / config is linked into it, so images are preprocessed and captions tokenised
for the CLIP being trained (``lico-clip``: ``model.model_name``, ``model.model_cfg``) or
explained (``lico-explainr``: ``model.clip_model``, ``model.clip_model_cfg``, the teacher).
``lico-explainr``'s concept-data options (vocabulary, tagger, cache, distillation batch size,
augmentation) form the ``--distillation.*`` group
(:class:`~lico_lightning.data.ConceptDistillationDataModule` around the caption data module).
``lico-lightning`` links the data module's ``class_names`` and ``image_size`` into the model.

Every script (:class:`BaseCLI`) has the same hardening:

* a configuration error (a misspelt option, a wrong value, an unknown backbone, data that is
  not where the recipe says) ends the script with one line, ``<script>: error: ...``, and exit
  status 2; set ``LICO_LIGHTNING_TRACEBACK=1`` to see the full traceback;
* ``last.ckpt`` is the state at the end of the last finished training epoch: Lightning's
  ``ModelCheckpoint(monitor=..., save_last=True)`` rewrites it only when the monitored metric
  enters its top-k (a run whose metric ties or falls would keep an old ``last.ckpt``), so the
  CLI hands ``save_last`` of every monitored checkpoint callback to one more
  ``ModelCheckpoint(filename="last", save_on_train_epoch_end=True)`` that saves every epoch;
* ``--trainer.fast_dev_run`` writes no checkpoint (``ModelCheckpoint(save_last=True)`` would
  otherwise write ``./checkpoints/last.ckpt`` into the current directory);
* ``test`` / ``validate`` / ``predict --ckpt_path <run>/checkpoints/x.ckpt`` log into
  ``<run>/<subcommand>`` (CSV and TensorBoard loggers) instead of opening a new version folder,
  and the checkpoint callback keeps the checkpoint's folder (no "dirpath has changed" warning).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning import LightningDataModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI

from lico_lightning._io import load_torch
from lico_lightning.data import CaptionDataModule, ConceptDistillationDataModule
from lico_lightning.modules import CLIPFineTuner, LICOClassifier, SurrogateDistiller
from lico_lightning.plugins import AtomicCheckpointIO

__all__ = [
    "CLIPCLI",
    "LICOCLI",
    "BaseCLI",
    "ExplainRCLI",
    "build_cli",
    "build_clip_cli",
    "build_explainr_cli",
    "clip_main",
    "explainr_main",
    "main",
    "run_script",
]

_TRACEBACK = "LICO_LIGHTNING_TRACEBACK"


class BaseCLI(LightningCLI):
    """LightningCLI with the hardening every console script of this package shares.

    Parser errors raise instead of printing the usage (``exit_on_error=False``), so that
    :func:`run_script` prints them as one line; ``fast_dev_run`` saves no checkpoint; evaluation
    from ``<run>/checkpoints/*.ckpt`` logs into ``<run>/<subcommand>``.
    """

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

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

    def _parse_ckpt_path(self) -> None:
        """Lightning reads ``--ckpt_path``'s hyperparameters here, before any hook, with a bare
        ``torch.load`` (an empty file ends in a bare ``EOFError``): read it through
        :func:`~lico_lightning._io.load_torch` first, whose errors name the file."""
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt and ckpt not in ("best", "last", "hpc") and Path(ckpt).is_file():
            load_torch(ckpt, "a Lightning checkpoint (--ckpt_path)", mmap=True)
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, writing checkpoints through :class:`~lico_lightning.plugins.AtomicCheckpointIO`
        (whole or not at all; load errors name the file) unless the configuration chose another
        checkpoint writer."""
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        _last_checkpoint_every_epoch(trainer)
        return trainer

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


def _last_checkpoint_every_epoch(trainer: Trainer) -> None:
    """Make ``last.ckpt`` the end of the last finished epoch (issue 18 point 14).

    On Lightning 2.6 a monitored ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only
    in a step where it also saved a top-k checkpoint (``_last_global_step_saved ==
    global_step`` in ``on_validation_end`` / ``on_train_epoch_end``), i.e. only when the
    metric improves. Each such callback keeps its top-k files and gives its ``save_last`` to
    an unmonitored callback whose single file is ``last.ckpt``, saved at every epoch end.
    """
    for callback in list(trainer.checkpoint_callbacks):
        if not isinstance(callback, ModelCheckpoint) or callback.monitor is None:
            continue
        if callback.save_last is not True:
            continue
        callback.save_last = False
        trainer.callbacks.append(  # type: ignore[attr-defined]  # set by the callback connector
            _LastEveryEpoch(
                callback,
                dirpath=callback.dirpath,
                filename=ModelCheckpoint.CHECKPOINT_NAME_LAST,
                save_top_k=1,
                save_on_train_epoch_end=True,
                enable_version_counter=False,
            )
        )


class _LastEveryEpoch(ModelCheckpoint):
    """The unmonitored every-epoch ``last.ckpt`` of :func:`_last_checkpoint_every_epoch`; it
    keeps the monitored callback's ``last_model_path`` pointing at the file it writes, so
    ``trainer.checkpoint_callback.last_model_path`` means what it always meant."""

    def __init__(self, source: ModelCheckpoint, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._source = source

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._source.last_model_path = filepath


class LICOCLI(BaseCLI):
    """``lico-lightning``: the data module's class names and image size linked into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.image_size", "model.image_size", apply_on="instantiate")


class CLIPCLI(BaseCLI):
    """``lico-clip``: the model's open_clip name / config linked into the caption data module."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.model_name", "data.init_args.model_name")
        parser.link_arguments("model.model_cfg", "data.init_args.model_cfg")


class ExplainRCLI(BaseCLI):
    """``lico-explainr``: the teacher's open_clip name / config (``model.clip_*``) linked into
    the caption data module, which a :class:`~lico_lightning.data.ConceptDistillationDataModule`
    built from the ``--distillation.*`` options wraps. The distiller reads its sizes
    (concepts, embedding width, training samples) and concept labels from it in ``setup``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(
            ConceptDistillationDataModule,
            "distillation",
            skip={"captions", "teacher"},
            instantiate=False,
        )
        parser.link_arguments("model.clip_model", "data.init_args.model_name")
        parser.link_arguments("model.clip_model_cfg", "data.init_args.model_cfg")

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        options = self._get(self.config, "distillation")
        # the teacher comes from the distiller (SurrogateDistiller.teacher) in setup
        self.datamodule = ConceptDistillationDataModule(self.datamodule, **dict(options))


def _build(
    cli_class: type[BaseCLI],
    model_class: type,
    datamodule_class: type,
    args: ArgsType,
    run: bool,
) -> Any:
    return cli_class(
        model_class,
        datamodule_class,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def build_cli(args: ArgsType = None, run: bool = True) -> LICOCLI:
    """Build (and by default run) the ``lico-lightning`` CLI; ``args`` as a list of strings or
    a dict.

    Example (from the repository root; trains the digits recipe for one short epoch)::

        cli = build_cli(["fit", "--config", "recipes/lico_digits.yaml",
                         "--trainer.max_epochs", "1"])
        cli.trainer.callback_metrics["val/acc"]
    """
    return _build(LICOCLI, LICOClassifier, LightningDataModule, args, run)


def build_clip_cli(args: ArgsType = None, run: bool = True) -> CLIPCLI:
    """Build (and by default run) the ``lico-clip`` CLI; ``args`` as a list of strings or a
    dict."""
    return _build(CLIPCLI, CLIPFineTuner, CaptionDataModule, args, run)


def build_explainr_cli(args: ArgsType = None, run: bool = True) -> ExplainRCLI:
    """Build (and by default run) the ``lico-explainr`` CLI; ``args`` as a list of strings or
    a dict."""
    return _build(ExplainRCLI, SurrogateDistiller, CaptionDataModule, args, run)


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


def _parser_message(err: argparse.ArgumentError) -> str:
    """jsonargparse's message without the lines that list Union subtypes or dump the value
    it could not validate."""
    drop = ("Given value", "Expected a <class 'NoneType'>", "Does not validate", "Subtypes:")
    lines = [line.strip(" -") for line in str(err).splitlines()]
    keep = [
        line
        for line in lines
        if line and line != "Errors:" and not line.startswith(drop) and "Namespace(" not in line
    ]
    return " ".join(keep)


def _help_hint(script: str, args: ArgsType) -> str:
    argv = sys.argv[1:] if args is None else args
    words = [a for a in argv if isinstance(a, str)] if isinstance(argv, list) else []
    command = next((a for a in words if a in ("fit", "validate", "test", "predict")), None)
    return f"{script} {command} --help" if command else f"{script} --help"


def run_script(script: str, build: Callable[[ArgsType], Any], args: ArgsType = None) -> None:
    """Run a console script: ``build(args)``, with a configuration error printed as one line.

    A parser error (unknown option, a value of the wrong type) or an error raised by the
    package's own checks (anywhere in the exception chain, e.g. wrapped by jsonargparse's
    "Does not validate against any of the Union subtypes") is printed as ``<script>: error:
    ...`` on stderr and ends the script with exit status 2; ``LICO_LIGHTNING_TRACEBACK=1``
    re-raises it instead.
    """
    try:
        build(args)
    except Exception as err:
        if os.environ.get(_TRACEBACK):
            raise
        cause = _package_error(err)
        if cause is not None:
            message = str(cause)
        elif isinstance(err, argparse.ArgumentError):
            message = f"{_parser_message(err)} (see {_help_hint(script, args)})"
        else:
            raise
        message = " ".join(message.split())
        print(f"{script}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def main(args: ArgsType = None) -> None:
    """Entry point of the ``lico-lightning`` console script (:func:`run_script`)."""
    run_script("lico-lightning", build_cli, args)


def clip_main(args: ArgsType = None) -> None:
    """Entry point of the ``lico-clip`` console script (:func:`run_script`)."""
    run_script("lico-clip", build_clip_cli, args)


def explainr_main(args: ArgsType = None) -> None:
    """Entry point of the ``lico-explainr`` console script (:func:`run_script`)."""
    run_script("lico-explainr", build_explainr_cli, args)


if __name__ == "__main__":  # pragma: no cover
    main()
