"""``ExplanationMonitor``: the one base of every monitor — schedule, probes, runs, logging.

A monitor explains a fixed probe set on a schedule while a model trains, turns the explanations
into metrics and overlay images, and logs both — without changing the run. Everything but the
explaining itself lives here, once: the schedule, drawing and sharding the probe set, fault
isolation, the no-perturbation guarantees, ``state_dict``, metric and image logging. The probe
types are in :mod:`lico_lightning.callbacks.probes`, the hosts (the program a monitor runs in)
in :mod:`lico_lightning.callbacks.hosts`.

Specialisations (:class:`~lico_lightning.callbacks.SaliencyMonitor` for classifiers,
:class:`~lico_lightning.callbacks.GroundingMonitor` for dual encoders,
:class:`~lico_lightning.callbacks.ConceptMonitor` for EXPLAIN-R) implement five small methods
(see "Specialising" in :class:`ExplanationMonitor`). Two entry points, one code path:

* a Lightning ``Trainer``: ``Trainer(callbacks=[monitor])`` — Lightning's hooks, with
  Lightning's signatures;
* a plain PyTorch loop or a Fabric script: :meth:`ExplanationMonitor.attach` ``(model, probes,
  log_dir=..., logger=..., fabric=...)`` once, then :meth:`ExplanationMonitor.step`
  ``(global_step, epoch)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal, Protocol

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.seed import isolate_rng
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from typing_extensions import override

from lico_lightning._safety import full_parameters, module_device, preserve_model_state
from lico_lightning._validation import check_int
from lico_lightning.callbacks.hosts import MonitorHost, _LoopHost, _TrainerHost, _unwrap
from lico_lightning.callbacks.probes import ProbeSet
from lico_lightning.data import draw_probe_indices, probe_items

__all__ = ["Evaluation", "ExplanationMonitor", "Stage"]

Stage = Literal["fit", "test"]


class Evaluation(Protocol):
    """What a monitor accumulates one run's metrics in (e.g. ``SaliencyEvaluation``).

    ``compute`` is a collective under DDP: every rank calls it, also after ``fail_all``.
    """

    def to(self, device: torch.device) -> Any: ...
    def fail_all(self, err: Exception) -> None: ...
    def compute(self) -> dict[str, float]: ...
    def reset(self) -> None: ...


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
    * Plain loop: :meth:`attach` ``(model, probes, log_dir=..., logger=...)`` once, then
      :meth:`step` ``(global_step, epoch)`` — after every optimizer step for
      ``every_n_train_steps``, at the end of every epoch for ``every_n_epochs``. It returns
      the logged values when the schedule fired, else an empty dict.
    * Fabric: the same two calls, with :meth:`attach` ``(model, probes, fabric=fabric)``:
      ranks and loggers come from ``fabric``. (Do not pass the monitor to
      ``Fabric(callbacks=...)``: its hooks are Lightning's.)

    **Probe set.** Given, or ``num_probes`` items drawn once from a dataset (the validation
    set under a Trainer, else the training set; the given dataset or dataloader's dataset in
    a loop) by :func:`lico_lightning.data.draw_probe_indices` with a ``torch.Generator``
    seeded by ``seed`` — the one draw of every monitor and host, so a seed means one probe
    set (for a :class:`~lico_lightning.data.CaptionDataset`, the set of its
    :meth:`~lico_lightning.data.CaptionDataset.draw_probes`). The drawn indices are in
    :meth:`state_dict`, so a resumed run explains the same items.

    **Distributed.** Every rank holds the same probe set and explains its shard
    ``probes[rank::world_size]``; the evaluation's ``compute`` reduces across ranks (every
    rank reaches it, also after a failure), so the values equal the single-process ones.
    Images are logged from rank 0's shard. Under FSDP (Lightning's ``FSDPStrategy``, or a
    ``FullyShardedDataParallel`` / Fabric model passed to :meth:`attach`) the monitor explains
    the *whole* model: every rank gathers the full parameters for the run
    (``summon_full_params(writeback=False)``, a collective that every rank joins, also one
    without probes) and drops them after it; the shards, their gradients and FSDP's state are
    left as they were (:func:`lico_lightning._safety.full_parameters`).

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
    image); override :meth:`_check_model` to refuse, before training, a model the monitor
    cannot explain (it runs in Lightning's ``setup`` and in :meth:`attach`).

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
        self.probe_indices: list[Any] | None = None
        self.last_epoch = -1
        self.last_step = -1
        self.num_runs = 0
        self.last_results: dict[str, float] = {}
        self.test_results: dict[str, float] = {}
        # plain-loop / Fabric host, set by `attach`
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
        """Fail early (Lightning's `setup`, or `attach`) on a model the monitor cannot explain."""

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

    @property
    def probe_set(self) -> ProbeSet | None:
        """The probe set every run explains (all ranks' rows), ``None`` before the first run."""
        return self._probe

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
        """The probe set of ``dataset``: the one seeded draw (:func:`~lico_lightning.data.
        draw_probe_indices`), once; drawn positions beyond the dataset (a resumed run on a
        smaller split) are drawn again."""
        indices = self.probe_indices
        if indices is not None:
            items = _restored_items(dataset, indices)
            if items is not None:
                return self._probes_from_items(items)
            # restored keys that do not fit this dataset (a resumed run on a smaller split):
            # draw again, once — the new keys replace them in the state
            self._warn(
                f"the restored probe keys (e.g. {indices[-1]!r}) do not fit this dataset of "
                f"{len(dataset)} items; drawing {self.num_probes} probes again (seed {self.seed})."
            )
        generator = torch.Generator().manual_seed(self.seed)
        indices = self.probe_indices = draw_probe_indices(dataset, self.num_probes, generator)
        if len(indices) < self.num_probes:
            self._warn(
                f"Expected num_probes={self.num_probes} probes, but the dataset gives "
                f"{len(indices)}; every run explains those {len(indices)}."
            )
        else:
            rank_zero_info(
                f"{type(self).__name__}: probe set = {len(indices)} items (seed {self.seed})."
            )
        return self._probes_from_items(probe_items(dataset, indices))

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
        with isolate_rng(include_cuda=torch.cuda.is_initialized()), ExitStack() as gathered:
            evaluation = self._evaluation("fit")
            explained, shard = None, None
            try:
                # a sharded (FSDP) model's whole parameters on every rank (a collective: also
                # on a rank without probes) until the overlay is drawn; nothing written back
                gathered.enter_context(full_parameters(host.wrapped_model))
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

    def _uncertainty_note(self) -> str | None:
        """The last run's logged means ± their standard errors, one line per method (model-level
        values on a line of their own), for the overlay figure; ``None`` when no standard error
        was logged."""
        lines: dict[str, list[str]] = {}
        for key, se in self.last_results.items():
            mean = self.last_results.get(key[: -len("_se")]) if key.endswith("_se") else None
            if mean is None:
                continue
            method, _, metric = key[len(self.prefix) + 1 : -len("_se")].partition("/")
            if not metric:  # a model-level value, e.g. saliency/cue_reliance
                method, metric = "model", method
            lines.setdefault(method, []).append(f"{metric} {mean:.3f} ± {se:.3f}")
        if not lines:
            return None
        size = len(self._probe) if self._probe is not None else 0
        text = [f"{method}: " + ", ".join(values) for method, values in lines.items()]
        return "\n".join([*text, f"(mean ± standard error over {size} probes)"])

    # ---------------------------------------------------------------- plain loop / Fabric
    def attach(
        self,
        model: nn.Module,
        probes: Any = None,
        *,
        log_dir: str | Path | None = None,
        logger: Any = None,
        fabric: Any = None,
    ) -> None:
        """Plain loop / Fabric: attach the monitor to ``model`` once before training; then call
        :meth:`step`. (Under a Lightning ``Trainer`` pass the monitor to ``callbacks=`` instead.)

        Args:
            model: the model to explain (DDP / FSDP / Fabric wrappers are looked through, and
                FSDP-sharded parameters gathered for each run; with ``model_attr``, that
                submodule of it).
            probes: a dataset or dataloader to draw ``num_probes`` items from, a collated batch
                (e.g. ``(images, labels)``), a :class:`~lico_lightning.callbacks.ProbeSet`, or
                ``None`` when probes were given to the constructor.
            log_dir: the run's directory; overlay PNGs go to ``{log_dir}/{prefix}/`` when no
                logger takes images (default: the logger's ``log_dir``).
            logger: a TensorBoard ``SummaryWriter``, a Lightning/Fabric logger or any object
                with ``log_metrics(metrics, step)`` and optionally ``log_image(key, images,
                step)``.
            fabric: a launched ``lightning_fabric.Fabric``: ranks and loggers come from it.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected `model` to be an nn.Module, but got {type(model).__name__}.")
        if probes is None and self._given is None:
            raise ValueError(
                "Expected `probes` (a dataset, dataloader or batch) when the monitor was built "
                "without probes, but got None."
            )
        host = _LoopHost(log_dir, logger, fabric, wrapped_model=model)
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
        """Plain loop / Fabric: run when the schedule says so (after :meth:`attach`).

        Call it after every optimizer step (``step(global_step)``) for ``every_n_train_steps``
        and at the end of every epoch (``step(global_step, epoch)``) for ``every_n_epochs``.

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
                f"Expected {type(self).__name__}.attach(model, probes, ...) before step(), "
                "but attach was not called."
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
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # fail early on a wrong `model_attr` or a model it cannot explain
            self._check_model(self._model(pl_module))

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if self.every_n_train_steps is not None and self._due(step, None):
            host = _TrainerHost(trainer, pl_module)
            self._run(host, self._model(pl_module), trainer, step, None, on_step=True)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._on_epoch(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
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
                wrapped = _TrainerHost(trainer, pl_module).wrapped_model
                with full_parameters(wrapped), preserve_model_state(model, eval_mode=False):
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


def _restored_items(dataset: Any, indices: list[Any]) -> list[Any] | None:
    """The items of restored probe keys, ``None`` when a key is beyond ``dataset`` (an
    integer position past its end, or a key its own ``probe`` refuses: an IndexError /
    KeyError, or a ValueError such as a caption pair without that phrase)."""
    if any(isinstance(i, int) and not 0 <= i < len(dataset) for i in indices):
        return None
    try:
        return probe_items(dataset, indices)
    except (IndexError, KeyError, ValueError):
        return None
