"""``ExplanationMonitor``: the one base of every monitor, and the programs it can run in.

A monitor explains a fixed probe set on a schedule while a model trains, turns the explanations
into metrics and overlay images, and logs both — without changing the run. Everything but the
explaining itself lives here, once: the schedule, drawing and sharding the probe set, fault
isolation, the no-perturbation guarantees, ``state_dict``, metric and image logging.

Specialisations (:class:`~lico_lightning.callbacks.SaliencyMonitor` for classifiers, a
grounding monitor for dual encoders) implement five small methods (see "Specialising" in
:class:`ExplanationMonitor`). The host — the program the monitor runs in — is an adapter
behind one interface (:class:`MonitorHost`):

* a Lightning ``Trainer``: ``Trainer(callbacks=[monitor])``;
* Lightning Fabric: ``Fabric(callbacks=[monitor])``, ``monitor.setup(model, probes,
  fabric=fabric)``, ``fabric.call("on_train_batch_end", global_step=step)`` and
  ``fabric.call("on_train_epoch_end", epoch=epoch, global_step=step)``;
* a plain PyTorch loop: ``monitor.setup(model, probes, log_dir=...)``, then
  ``monitor.step(global_step, epoch)``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.seed import isolate_rng
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from typing_extensions import Self, override

from lico_lightning._safety import module_device, preserve_model_state
from lico_lightning._validation import check_int

__all__ = ["Evaluation", "ExplanationMonitor", "MonitorHost", "ProbeSet"]

Stage = Literal["fit", "test"]
_P = TypeVar("_P", bound="ProbeSet")


# ------------------------------------------------------------------------------------------
# probes and evaluations
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ProbeSet:
    """Base of a monitor's probe set: every field holds ``N`` rows (a tensor whose first dim is
    ``N``, a list of ``N`` items, or ``None`` for an absent optional field).

    A specialisation declares its fields (e.g. images, labels, boxes) as a dataclass deriving
    from this; selection, sharding across ranks and moving to a device then work for free.

    Example:
        >>> @dataclasses.dataclass
        ... class Pairs(ProbeSet):
        ...     images: Tensor
        ...     names: list[str]
        >>> p = Pairs(torch.zeros(5, 3), list("abcde"))
        >>> len(p), p.shard(1, 2).names
        (5, ['b', 'd'])
    """

    def __len__(self) -> int:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                return len(value)
        return 0

    def select(self, index: slice) -> Self:
        """The rows ``index`` of every field."""
        values = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            values[field.name] = None if value is None else value[index]
        return dataclasses.replace(self, **values)

    def shard(self, rank: int, world_size: int) -> Self:
        """Rows ``rank::world_size`` — the share of one process."""
        return self.select(slice(rank, None, world_size))

    def to(self, device: torch.device | str) -> Self:
        """Tensor fields (and tensors in list fields) moved to ``device``."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Tensor):
                value = value.to(device)
            elif isinstance(value, list):
                value = [v.to(device) if isinstance(v, Tensor) else v for v in value]
            values[field.name] = value
        return dataclasses.replace(self, **values)


class Evaluation(Protocol):
    """What a monitor accumulates one run's metrics in (e.g. ``SaliencyEvaluation``).

    ``compute`` is a collective under DDP: every rank calls it, also after ``fail_all``.
    """

    def to(self, device: torch.device) -> Any: ...
    def fail_all(self, err: Exception) -> None: ...
    def compute(self) -> dict[str, float]: ...
    def reset(self) -> None: ...


# ------------------------------------------------------------------------------------------
# hosts
# ------------------------------------------------------------------------------------------
class MonitorHost(ABC):
    """The program a monitor runs in: ranks, device, step, loggers and the run's directory."""

    global_rank: int = 0
    world_size: int = 1
    log_dir: Path | None = None

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    @property
    def loggers(self) -> list[Any]:
        return []

    @abstractmethod
    def log_metrics(self, results: dict[str, float], step: int, on_step: bool) -> None:
        """Log already reduced values (called on every rank)."""

    def log_image(self, tag: str, image: Tensor, step: int, epoch: int | None) -> None:
        """An ``(3, H, W)`` image to every logger that takes images (TensorBoard's
        ``add_image``, ``log_image``), else as a PNG under the run's directory (rank 0 only)."""
        written = False
        for logger in self.loggers:
            writer = logger if hasattr(logger, "add_image") else getattr(logger, "experiment", None)
            if writer is not None and callable(getattr(writer, "add_image", None)):
                writer.add_image(tag, image, global_step=step)
                written = True
            elif callable(getattr(logger, "log_image", None)):
                logger.log_image(key=tag, images=[image], step=step)
                written = True
        if written:
            return
        if self.log_dir is None:
            raise RuntimeError(
                "Expected a logger that takes images or a run directory for the overlay PNGs, "
                "but got neither: pass `log_dir=` (or a logger) to `setup`."
            )
        from lico_lightning.viz import save_png

        name = f"overlays_epoch{epoch if epoch is not None else 0:03d}_step{step:06d}.png"
        save_png(image, Path(self.log_dir) / tag.split("/")[0] / name)


class _TrainerHost(MonitorHost):
    """A Lightning ``Trainer`` (values through ``pl_module.log`` so checkpointing sees them)."""

    def __init__(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trainer, self.pl_module = trainer, pl_module
        self.global_rank, self.world_size = trainer.global_rank, trainer.world_size
        root = next((lg.log_dir for lg in trainer.loggers if getattr(lg, "log_dir", None)), None)
        self.log_dir = Path(root or trainer.default_root_dir)

    @property
    @override
    def loggers(self) -> list[Any]:
        return list(self.trainer.loggers)

    @override
    def log_metrics(self, results: dict[str, float], step: int, on_step: bool) -> None:
        test = self.trainer.state.fn == "test"
        for key, value in results.items():
            self.pl_module.log(
                key,
                value,
                on_step=on_step,
                on_epoch=not on_step,
                prog_bar=False,
                # step-level logs reach the loggers only every `log_every_n_steps`: they are
                # written directly below, `pl_module.log` keeps them in callback_metrics;
                # test results always go through it (`trainer.test` returns and prints them)
                logger=not on_step and (bool(self.trainer.loggers) or test),
                sync_dist=False,  # already reduced: identical on every rank
                rank_zero_only=False,
                add_dataloader_idx=False,
                batch_size=1,
            )
        if on_step and results and self.is_global_zero:
            for logger in self.trainer.loggers:
                logger.log_metrics(results, step=step)


class _LoopHost(MonitorHost):
    """A plain loop or a Fabric script: ranks from Fabric or ``torch.distributed``; loggers are
    Fabric's, a TensorBoard ``SummaryWriter`` or any object with ``log_metrics``/``log_image``."""

    def __init__(self, log_dir: str | Path | None, logger: Any, fabric: Any) -> None:
        self._loggers = list(fabric.loggers) if fabric is not None else []
        if logger is not None:
            self._loggers.append(logger)
        if fabric is not None:
            self.global_rank, self.world_size = fabric.global_rank, fabric.world_size
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            self.global_rank = torch.distributed.get_rank()
            self.world_size = torch.distributed.get_world_size()
        if log_dir is None:
            log_dir = next(
                (
                    getattr(lg, "log_dir", None) or getattr(lg, "logdir", None)
                    for lg in self._loggers
                    if getattr(lg, "log_dir", None) or getattr(lg, "logdir", None)
                ),
                None,
            )
        self.log_dir = Path(log_dir) if log_dir is not None else None

    @property
    @override
    def loggers(self) -> list[Any]:
        return self._loggers

    @override
    def log_metrics(self, results: dict[str, float], step: int, on_step: bool) -> None:
        if not self.is_global_zero or not results:
            return
        for logger in self._loggers:
            if callable(getattr(logger, "log_metrics", None)):
                logger.log_metrics(results, step=step)
            elif callable(getattr(logger, "add_scalar", None)):
                for key, value in results.items():
                    logger.add_scalar(key, value, global_step=step)


def _unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / Fabric wrappers (explaining through DDP's forward would
    arm its gradient reducer)."""
    while isinstance(model, nn.parallel.DistributedDataParallel) or (
        type(model).__name__ == "_FabricModule"
    ):
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            break
        model = inner
    return model


# ------------------------------------------------------------------------------------------
# the base
# ------------------------------------------------------------------------------------------
class ExplanationMonitor(Callback, ABC):
    r"""Explain a fixed probe set on a schedule during training, log metrics and overlays.

    **Hosts.** One object, three ways to run it (the same code path for each):

    * Lightning: ``Trainer(callbacks=[monitor])``. With ``every_n_epochs=k`` it runs in every
      k-th epoch at the end of its (first) validation run — before ``ModelCheckpoint`` /
      ``EarlyStopping`` read the values — or at the training epoch's end when no validation
      ran; with ``every_n_train_steps=k`` after every k-th optimizer step. Values go through
      ``pl_module.log`` (so checkpointing can monitor them) and, for the step schedule,
      straight to the loggers at ``step=global_step``. During ``trainer.test`` every test
      batch is explained (``evaluate_test``) and ``test/{prefix}/...`` logged.
    * Plain loop: :meth:`setup` ``(model, probes, log_dir=..., logger=...)`` once, then
      :meth:`step` ``(global_step, epoch)`` — after every optimizer step for
      ``every_n_train_steps``, at the end of every epoch for ``every_n_epochs``. It returns
      the logged values when the schedule fired, else an empty dict.
    * Fabric: ``Fabric(callbacks=[monitor])``, :meth:`setup` ``(model, probes,
      fabric=fabric)``, then ``fabric.call("on_train_batch_end", global_step=step)`` after
      each optimizer step and ``fabric.call("on_train_epoch_end", epoch=epoch,
      global_step=step)`` after each epoch (or :meth:`step`). Ranks and loggers come from
      ``fabric``.

    **Probe set.** Given, or ``num_probes`` items drawn once from a dataset (the validation
    set under a Trainer, else the training set; the given dataset or dataloader's dataset in
    a loop) with a ``torch.Generator`` seeded by ``seed``. The drawn indices are in
    :meth:`state_dict`, so a resumed run explains the same items.

    **Distributed.** Every rank holds the same probe set and explains its shard
    ``probes[rank::world_size]``; the evaluation's ``compute`` reduces across ranks (every
    rank reaches it, also after a failure), so the values equal the single-process ones.
    Images are logged from rank 0's shard.

    **No perturbation.** Every module's ``training`` flag and every parameter's
    ``requires_grad`` are restored, gradients are taken w.r.t. activations or inputs only
    (parameter ``.grad`` untouched), and the torch / numpy / ``random`` RNG states are
    restored (Lightning's ``isolate_rng``). A run with the monitor gives the same weights as
    one without it.

    **Fault isolation.** An exception while explaining, computing or logging becomes a
    warning and training goes on unchanged.

    **Specialising.** Implement :meth:`_probes_from_items` (dataset items → probe set),
    :meth:`_probes_from_batch` (one batch → probe set), :meth:`_evaluation` (a fresh
    :class:`Evaluation` for a stage), :meth:`_explain` (explain one shard into the
    evaluation; return what the overlay needs) and :meth:`_render` (that → an ``(3, H, W)``
    image), and call :meth:`_check_model` in the hosts' setup when a model is known.

    Args:
        every_n_epochs: run every k epochs (default 1 when neither schedule is given).
        every_n_train_steps: run every k optimizer steps instead.
        num_probes: size of a drawn probe set.
        probes: an explicit probe set (nothing is drawn).
        seed: seed of the probe draw.
        model_attr: explain ``pl_module.<model_attr>`` (dotted) instead of the module itself.
        log_images: log an overlay image per run.
        num_images: at most this many probe items in an overlay image.
        prefix: first part of the logged keys, ``{prefix}/...``.
        evaluate_test: explain every batch during ``trainer.test``.
    """

    def __init__(
        self,
        *,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        num_probes: int = 16,
        probes: ProbeSet | None = None,
        seed: int = 0,
        model_attr: str | None = None,
        log_images: bool = True,
        num_images: int = 8,
        prefix: str,
        evaluate_test: bool = True,
    ) -> None:
        super().__init__()
        if every_n_epochs is None and every_n_train_steps is None:
            every_n_epochs = 1
        if every_n_epochs is not None and every_n_train_steps is not None:
            raise ValueError(
                "Expected only one of `every_n_epochs` and `every_n_train_steps`, but got "
                f"{every_n_epochs} and {every_n_train_steps}."
            )
        if every_n_epochs is not None:
            check_int("every_n_epochs", every_n_epochs, 1)
        if every_n_train_steps is not None:
            check_int("every_n_train_steps", every_n_train_steps, 1)
        check_int("num_probes", num_probes, 1)
        check_int("num_images", num_images, 0)
        check_int("seed", seed, -(2**63))
        if probes is not None and not isinstance(probes, ProbeSet):
            raise TypeError(f"Expected `probes` to be a ProbeSet, but got {type(probes).__name__}.")
        self.every_n_epochs = every_n_epochs
        self.every_n_train_steps = every_n_train_steps
        self.num_probes = num_probes
        self.seed = seed
        self.model_attr = model_attr
        self.log_images = log_images
        self.num_images = num_images
        self.prefix = prefix
        self.evaluate_test = evaluate_test
        self._given = probes
        self._probe: ProbeSet | None = None
        self.probe_indices: list[int] | None = None
        self.last_epoch = -1
        self.last_step = -1
        self.num_runs = 0
        self.last_results: dict[str, float] = {}
        self.test_results: dict[str, float] = {}
        # plain-loop / Fabric host, set by `setup`
        self._loop: tuple[_LoopHost, nn.Module, Any] | None = None
        self._test: Evaluation | None = None
        self._test_bar: Any = None

    # ---------------------------------------------------------------- to specialise
    @abstractmethod
    def _probes_from_items(self, items: list[Any]) -> ProbeSet:
        """Dataset items (as ``dataset[i]`` returns them) → a probe set."""

    @abstractmethod
    def _probes_from_batch(self, batch: Any) -> ProbeSet:
        """One collated batch (a test batch, or the probes a user passes) → a probe set."""

    @abstractmethod
    def _evaluation(self, stage: Stage) -> Evaluation:
        """A fresh evaluation (metric accumulators) for one run or one test epoch."""

    @abstractmethod
    def _explain(
        self, model: nn.Module, evaluation: Evaluation, probes: ProbeSet, stage: Stage
    ) -> Any:
        """Explain ``probes`` (on the model's device) into ``evaluation``; return what
        :meth:`_render` needs (``None`` → no image). Per-method failures are the
        evaluation's to count; an exception here fails the whole run (one warning)."""

    @abstractmethod
    def _render(self, probes: ProbeSet, explained: Any, host: MonitorHost, step: int) -> Tensor:
        """``(3, H, W)`` overlay image of the first ``num_images`` probes."""

    def _check_model(self, model: nn.Module) -> None:
        """Fail early (at setup) on a model the monitor cannot explain."""

    def _warn(self, message: str) -> None:
        rank_zero_warn(f"{type(self).__name__}: {message}")

    # ---------------------------------------------------------------- state
    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(**self._state_key_fields())

    def _state_key_fields(self) -> dict[str, Any]:
        return {
            "every_n_epochs": self.every_n_epochs,
            "every_n_train_steps": self.every_n_train_steps,
            "prefix": self.prefix,
        }

    @override
    def state_dict(self) -> dict[str, Any]:
        """Schedule position and probe draw — what a resumed run needs to continue exactly."""
        return {
            "seed": self.seed,
            "num_probes": self.num_probes,
            "probe_indices": self.probe_indices,
            "last_epoch": self.last_epoch,
            "last_step": self.last_step,
            "num_runs": self.num_runs,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seed = state_dict.get("seed", self.seed)
        self.num_probes = state_dict.get("num_probes", self.num_probes)
        self.probe_indices = state_dict.get("probe_indices")
        self.last_epoch = state_dict.get("last_epoch", -1)
        self.last_step = state_dict.get("last_step", -1)
        self.num_runs = state_dict.get("num_runs", 0)
        self._probe = None

    # ---------------------------------------------------------------- schedule
    def _due(self, global_step: int | None, epoch: int | None) -> bool:
        n_steps, n_epochs = self.every_n_train_steps, self.every_n_epochs
        if n_steps is not None and global_step is not None:
            if global_step > 0 and global_step % n_steps == 0 and global_step != self.last_step:
                self.last_step = global_step
                return True
        if n_epochs is not None and epoch is not None:
            if (epoch + 1) % n_epochs == 0 and epoch != self.last_epoch:
                self.last_epoch = epoch
                return True
        return False

    # ---------------------------------------------------------------- probes
    def _model_attr_target(self, module: nn.Module) -> Any:
        """What the dotted path ``model_attr`` names inside ``module`` (``module`` if unset)."""
        obj: Any = module
        for part in self.model_attr.split(".") if self.model_attr is not None else ():
            if not hasattr(obj, part):
                raise ValueError(
                    f"Expected `model_attr` to name an attribute of {type(module).__name__}, "
                    f"but got {self.model_attr!r} ({part!r} not found)."
                )
            obj = getattr(obj, part)
        return obj

    def _model(self, module: nn.Module) -> nn.Module:
        obj = self._model_attr_target(module)
        if not isinstance(obj, nn.Module):
            raise TypeError(
                f"Expected `model_attr` to name an nn.Module, but got {type(obj).__name__}."
            )
        return obj

    def _draw(self, dataset: Any) -> ProbeSet:
        try:
            size = len(dataset)
        except TypeError:
            raise RuntimeError(
                f"{type(self).__name__} needs a map-style dataset (with __len__) to draw probes "
                "from; pass the probes explicitly instead."
            ) from None
        if self.probe_indices is None or any(i >= size for i in self.probe_indices):
            generator = torch.Generator().manual_seed(self.seed)
            self.probe_indices = torch.randperm(size, generator=generator)[
                : self.num_probes
            ].tolist()
            rank_zero_info(
                f"{type(self).__name__}: probe set = {len(self.probe_indices)} items "
                f"(seed {self.seed})."
            )
        return self._probes_from_items([dataset[i] for i in self.probe_indices])

    def _trainer_dataset(self, trainer: pl.Trainer) -> Any:
        for loaders in (trainer.val_dataloaders, trainer.train_dataloader):
            if loaders is None:
                continue
            if isinstance(loaders, Mapping):
                loaders = next(iter(loaders.values()))
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            dataset = getattr(loader, "dataset", None)
            if dataset is not None:
                return dataset
        raise RuntimeError(f"{type(self).__name__} found no dataloader to draw probes from.")

    def _resolve_probes(self, source: Any) -> ProbeSet:
        """Given probes, a Trainer's / the given dataset or dataloader to draw from, or a batch."""
        if self._given is not None:
            return self._given
        if isinstance(source, ProbeSet):
            return source
        if isinstance(source, pl.Trainer):
            source = self._trainer_dataset(source)
        if isinstance(source, DataLoader):
            source = source.dataset
        if isinstance(source, Dataset) or (
            hasattr(source, "__getitem__")
            and hasattr(source, "__len__")
            and not isinstance(source, (tuple, list, Mapping))
        ):
            return self._draw(source)
        return self._probes_from_batch(source)

    # ---------------------------------------------------------------- one run (every host)
    def _run(
        self,
        host: MonitorHost,
        model: nn.Module,
        probes: Any,
        step: int,
        epoch: int | None,
        on_step: bool,
    ) -> dict[str, float]:
        results: dict[str, float] = {}
        with isolate_rng(include_cuda=torch.cuda.is_initialized()):
            evaluation = self._evaluation("fit")
            explained, shard = None, None
            try:
                with preserve_model_state(model, eval_mode=False):
                    if self._probe is None:
                        self._probe = self._resolve_probes(probes)
                    device = module_device(model, torch.device("cpu"))
                    evaluation.to(device)
                    shard = self._probe.shard(host.global_rank, host.world_size)
                    if len(shard) > 0:
                        shard = shard.to(device)
                        explained = self._explain(model, evaluation, shard, "fit")
            except Exception as err:  # fault isolation: one warning, training goes on
                evaluation.fail_all(err)
            try:
                values = evaluation.compute()  # collective: every rank reaches it
                results = {f"{self.prefix}/{k}": v for k, v in values.items()}
                self.last_results = results
                host.log_metrics(results, step, on_step)
                if (
                    self.log_images
                    and self.num_images > 0
                    and host.is_global_zero
                    and explained is not None
                    and shard is not None
                ):
                    with preserve_model_state(model):
                        image = self._render(
                            shard.select(slice(0, self.num_images)), explained, host, step
                        )
                    host.log_image(f"{self.prefix}/overlays", image, step, epoch)
            except Exception as err:
                self._warn(f"logging failed ({type(err).__name__}: {err}); training continues.")
        self.num_runs += 1
        return results

    # ---------------------------------------------------------------- plain loop / Fabric
    @override
    def setup(
        self,
        model: nn.Module | pl.Trainer,
        probes: Any = None,
        stage: str | None = None,
        *,
        log_dir: str | Path | None = None,
        logger: Any = None,
        fabric: Any = None,
    ) -> None:
        """Plain loop / Fabric: ``setup(model, probes, log_dir=..., logger=..., fabric=...)``
        once before training. (Lightning calls it as ``setup(trainer, pl_module, stage)``.)

        Args:
            model: the model to explain (DDP / Fabric wrappers are looked through; with
                ``model_attr``, that submodule of it).
            probes: a dataset or dataloader to draw ``num_probes`` items from, a collated batch
                (e.g. ``(images, labels)``), a :class:`ProbeSet`, or ``None`` when probes were
                given to the constructor.
            stage: Lightning's stage (leave it out).
            log_dir: the run's directory; overlay PNGs go to ``{log_dir}/{prefix}/`` when no
                logger takes images (default: the logger's ``log_dir``).
            logger: a TensorBoard ``SummaryWriter``, a Lightning/Fabric logger or any object
                with ``log_metrics(metrics, step)`` and optionally ``log_image(key, images,
                step)``.
            fabric: a launched ``lightning_fabric.Fabric``: ranks and loggers come from it.
        """
        if isinstance(model, pl.Trainer):
            if stage == "fit":  # fail early on a wrong `model_attr`
                self._check_model(self._model(probes))
            return
        self._setup_loop(model, probes, log_dir=log_dir, logger=logger, fabric=fabric)

    def _setup_loop(
        self,
        model: nn.Module,
        probes: Any = None,
        *,
        log_dir: str | Path | None = None,
        logger: Any = None,
        fabric: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected `model` to be an nn.Module, but got {type(model).__name__}.")
        if probes is None and self._given is None:
            raise ValueError(
                "Expected `probes` (a dataset, dataloader or batch) when the monitor was built "
                "without probes, but got None."
            )
        host = _LoopHost(log_dir, logger, fabric)
        if (
            self.log_images
            and host.log_dir is None
            and not any(hasattr(lg, "add_image") or hasattr(lg, "log_image") for lg in host.loggers)
        ):
            raise ValueError(
                "Expected `log_dir` (the run's directory, for overlay PNGs) or a logger that "
                "takes images, but got neither; or build the monitor with `log_images=False`."
            )
        explained = self._model(_unwrap(model))
        self._check_model(explained)
        self._loop = (host, explained, probes)
        self._probe = None

    def step(self, global_step: int, epoch: int | None = None) -> dict[str, float]:
        """Plain loop / Fabric: run when the schedule says so (after :meth:`setup`).

        Args:
            global_step: optimizer steps taken so far (the step schedule's clock and the
                logging step).
            epoch: the epoch that just ended (the epoch schedule's clock; ``None`` in the
                middle of an epoch).

        Returns:
            ``{f"{prefix}/...": value}`` when the monitor ran, else ``{}``.
        """
        if self._loop is None:
            raise RuntimeError(
                f"Expected {type(self).__name__}.setup(model, probes, ...) before step(), "
                "but setup was not called."
            )
        check_int("global_step", global_step, 0)
        if epoch is not None:
            check_int("epoch", epoch, 0)
        if not self._due(global_step, epoch):
            return {}
        host, model, probes = self._loop
        return self._run(host, model, probes, global_step, epoch, on_step=epoch is None)

    # ---------------------------------------------------------------- Lightning Trainer
    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer | None = None,
        pl_module: pl.LightningModule | None = None,
        outputs: Any = None,
        batch: Any = None,
        batch_idx: int = 0,
        *,
        global_step: int | None = None,
    ) -> None:
        """Lightning hook; under Fabric ``fabric.call("on_train_batch_end", global_step=s)``."""
        if trainer is None or pl_module is None:
            if global_step is None:
                raise ValueError("Expected `global_step=` in fabric.call('on_train_batch_end').")
            self.step(global_step)
            return
        step = trainer.global_step
        if self.every_n_train_steps is not None and self._due(step, None):
            self._run(
                _TrainerHost(trainer, pl_module), self._model(pl_module), trainer, step, None, True
            )

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._on_epoch(trainer, pl_module)

    @override
    def on_train_epoch_end(
        self,
        trainer: pl.Trainer | None = None,
        pl_module: pl.LightningModule | None = None,
        *,
        epoch: int | None = None,
        global_step: int | None = None,
    ) -> None:
        """Lightning hook; under Fabric ``fabric.call("on_train_epoch_end", epoch=e,
        global_step=s)``."""
        if trainer is None or pl_module is None:
            if epoch is None or global_step is None:
                raise ValueError(
                    "Expected `epoch=` and `global_step=` in fabric.call('on_train_epoch_end')."
                )
            self.step(global_step, epoch)
            return
        self._on_epoch(trainer, pl_module)

    def _on_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs is None or not self._due(None, trainer.current_epoch):
            return
        host = _TrainerHost(trainer, pl_module)
        self._run(
            host,
            self._model(pl_module),
            trainer,
            trainer.global_step,
            trainer.current_epoch,
            on_step=False,
        )

    # ---------------------------------------------------------------- test stage
    @override
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._test = self._evaluation("test") if self.evaluate_test else None
        if self._test is not None:
            total = sum(trainer.num_test_batches) if trainer.num_test_batches else None
            self._test_bar = tqdm(
                total=total,
                desc=f"{type(self).__name__} (test)",
                disable=not trainer.is_global_zero or trainer.progress_bar_callback is None,
                leave=False,
                dynamic_ncols=True,
            )

    @override
    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._test is None:
            return
        with isolate_rng(include_cuda=torch.cuda.is_initialized()):
            try:
                model = self._model(pl_module)
                with preserve_model_state(model, eval_mode=False):
                    probes = self._probes_from_batch(batch)
                    device = module_device(model, torch.device("cpu"))
                    self._test.to(device)
                    self._explain(model, self._test, probes.to(device), "test")
            except Exception as err:
                self._test.fail_all(err)
        if self._test_bar is not None:
            self._test_bar.update(1)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._test is None:
            return
        if self._test_bar is not None:
            self._test_bar.close()
            self._test_bar = None
        try:
            values = self._test.compute()
            self.test_results = {f"test/{self.prefix}/{k}": v for k, v in values.items()}
            _TrainerHost(trainer, pl_module).log_metrics(
                self.test_results, trainer.global_step, on_step=False
            )
        except Exception as err:
            self._warn(f"test logging failed ({type(err).__name__}: {err}).")
        self._test = None
