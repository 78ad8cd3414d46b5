"""Monitor hosts: the program an :class:`~lico_lightning.callbacks.ExplanationMonitor` runs in.

One interface, :class:`MonitorHost` (ranks, device, loggers, the run's directory, metric and
image logging), with two adapters: a Lightning ``Trainer`` (values through ``pl_module.log``)
and a plain loop or Fabric script (ranks from Fabric or ``torch.distributed``, loggers given).
The monitor's code path is the same for both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from typing_extensions import override

__all__ = ["MonitorHost"]


class MonitorHost(ABC):
    """The program a monitor runs in: ranks, device, step, loggers and the run's directory.

    ``wrapped_model`` is the outermost wrapper of the trained model (DDP, FSDP, Fabric's), whose
    FSDP-sharded parameters a run gathers (:func:`lico_lightning._safety.full_parameters`)."""

    global_rank: int = 0
    world_size: int = 1
    log_dir: Path | None = None
    wrapped_model: nn.Module | None = None

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
                "but got neither: pass `log_dir=` (or a logger) to `attach`."
            )
        from lico_lightning.viz import save_png

        name = f"overlays_epoch{epoch if epoch is not None else 0:03d}_step{step:06d}.png"
        save_png(image, Path(self.log_dir) / tag.split("/")[0] / name)


class _TrainerHost(MonitorHost):
    """A Lightning ``Trainer`` (values through ``pl_module.log`` so checkpointing sees them)."""

    def __init__(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trainer, self.pl_module = trainer, pl_module
        self.global_rank, self.world_size = trainer.global_rank, trainer.world_size
        wrapped = trainer.strategy.model  # e.g. FSDP around the LightningModule
        self.wrapped_model = wrapped if isinstance(wrapped, nn.Module) else pl_module
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

    def __init__(
        self,
        log_dir: str | Path | None,
        logger: Any,
        fabric: Any,
        wrapped_model: nn.Module | None = None,
    ) -> None:
        self.wrapped_model = wrapped_model
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
    """The user's module inside DDP / FSDP / Fabric wrappers (explaining through DDP's forward
    would arm its gradient reducer, through FSDP's re-shard it)."""
    while isinstance(model, nn.parallel.DistributedDataParallel) or (
        type(model).__name__ in ("_FabricModule", "FullyShardedDataParallel")
    ):
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            break
        model = inner
    return model
