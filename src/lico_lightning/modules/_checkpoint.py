"""Which LightningModule of the package a checkpoint belongs to (issue 18 point 5).

Each module records its class in the checkpoint (``on_save_checkpoint``); its
``load_from_checkpoint`` reads that record, or for older files the names of the saved
hyperparameters, before building anything, so a checkpoint of another module fails with one
line naming both classes instead of a random model and a list of missing keys.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import IO, Any

import pytorch_lightning as pl

from lico_lightning._io import load_torch

#: the checkpoint key holding the module's class (its first base among the package's modules)
CLASS_KEY = "lico_lightning_module"

_FAMILIES: dict[str, type[pl.LightningModule]] = {}


class CheckpointOwner(pl.LightningModule):
    """Base of the package's modules: records the class on save, checks it on load."""

    def __init_subclass__(cls, family: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if family:
            _FAMILIES[cls.__name__] = cls

    @classmethod
    def _family(cls) -> str:
        for klass in cls.__mro__:
            if klass.__name__ in _FAMILIES and _FAMILIES[klass.__name__] is klass:
                return klass.__name__
        return cls.__name__

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CLASS_KEY] = self._family()

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path | IO[bytes],
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """As ``LightningModule.load_from_checkpoint``, after checking that the file is a
        checkpoint of this class (not of another module of the package)."""
        if isinstance(checkpoint_path, (str, Path)) and "://" not in str(checkpoint_path):
            check_checkpoint_class(cls, checkpoint_path)
        return super().load_from_checkpoint(
            checkpoint_path,
            map_location=map_location,
            hparams_file=hparams_file,
            strict=strict,
            **kwargs,
        )


def _init_params(cls: type) -> set[str]:
    return {
        name
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _owner_of(checkpoint: dict[str, Any]) -> str | None:
    """The family recorded in the checkpoint, or the only family whose constructor takes every
    saved hyperparameter (older files); ``None`` when it cannot be told."""
    recorded = checkpoint.get(CLASS_KEY)
    if isinstance(recorded, str):
        return recorded
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or not hparams:
        return None
    keys = set(hparams)
    fits = [name for name, klass in _FAMILIES.items() if keys <= _init_params(klass)]
    return fits[0] if len(fits) == 1 else None


def check_checkpoint_class(cls: type[CheckpointOwner], path: str | Path) -> None:
    """Raise when ``path`` is a checkpoint of another module of the package than ``cls``."""
    what = f"a {cls.__name__} checkpoint"
    checkpoint = load_torch(path, what, mmap=True)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        keys = sorted(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint)
        raise ValueError(
            f"Expected {path} to be {what} (a Lightning checkpoint with a 'state_dict'), but got "
            f"a file with {keys} (a weights file? CLIPFineTuner takes one as `pretrained`, "
            "SurrogateDistiller as `clip_checkpoint`)."
        )
    owner = _owner_of(checkpoint)
    if owner is not None and owner != cls._family():
        raise ValueError(
            f"Expected {path} to be {what}, but got a checkpoint of {owner}; load it with "
            f"{owner}.load_from_checkpoint."
        )
