"""Lightning plugins: :class:`AtomicCheckpointIO`, the checkpoint writer every CLI and recipe of
the package uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

from lico_lightning._io import load_torch, save_torch

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints that appear whole or not at all, and load errors that name the file.

    Lightning's own writer stages a checkpoint in the system's temporary folder and *copies* it
    to the run folder, so a full disk during the copy leaves a truncated file under the final
    name (``last.ckpt`` that every later resume then fails on). This one writes a temporary file
    beside the final name, flushes it to disk and renames it over the final name: a failure
    leaves the previous checkpoint (or none) and names the path. Loading an empty, truncated or
    foreign file raises ``ValueError`` naming it instead of torch's "PytorchStreamReader failed
    reading zip archive".

    Example:
        >>> import pytorch_lightning as pl
        >>> trainer = pl.Trainer(plugins=[AtomicCheckpointIO()], logger=False, accelerator="cpu")
        >>> type(trainer.strategy.checkpoint_io).__name__
        'AtomicCheckpointIO'
    """

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                "Expected no `storage_options` for AtomicCheckpointIO (local files only), but got "
                f"{storage_options!r}."
            )
        save_torch(checkpoint, path)

    @override
    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable[..., Any] | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if weights_only is False:  # an explicit request for full unpickling: Lightning's path
            return super().load_checkpoint(path, map_location, weights_only)
        return load_torch(path, "a Lightning checkpoint", map_location=map_location)
