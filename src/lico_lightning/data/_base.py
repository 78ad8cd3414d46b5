"""Shared machinery of the image data modules: loaders, resumable shuffling, split state."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from lico_lightning._validation import check_int
from lico_lightning.data._class_names import check_class_names
from lico_lightning.data._datasets import IndexedDataset
from lico_lightning.data._sampler import ResumableRandomSampler

__all__ = ["ImageDataModule"]

_C = TypeVar("_C", bound=type)


def with_defaults(**defaults: Any) -> Callable[[_C], _C]:
    """Class decorator: the parent's constructor, unchanged but for the defaults given.

    A data module that differs from its parent only in defaults (``ImageNetDataModule``: batch
    128, no name clean-up) declares just those. The constructor's signature — what
    ``LightningCLI`` / jsonargparse and ``help()`` read — is the parent's with the new defaults,
    so every option shows in ``--help`` and loads from YAML; arguments are bound against it and
    passed to the parent, whose ``save_hyperparameters`` records them.

    Example:
        >>> class Base:
        ...     def __init__(self, a: int, b: int = 1, c: str = "x") -> None:
        ...         self.a, self.b, self.c = a, b, c
        >>> @with_defaults(b=2)
        ... class Child(Base):
        ...     pass
        >>> inspect.signature(Child)
        <Signature (a: int, b: int = 2, c: str = 'x') -> None>
        >>> vars(Child(0)), vars(Child(0, 5, c="y"))
        ({'a': 0, 'b': 2, 'c': 'x'}, {'a': 0, 'b': 5, 'c': 'y'})
    """

    def decorate(cls: _C) -> _C:
        parent_init = cls.__mro__[1].__init__  # type: ignore[misc]  # a class, not an instance
        signature = inspect.signature(parent_init, eval_str=True)  # real types for jsonargparse
        unknown = sorted(set(defaults) - set(signature.parameters))
        if unknown:
            raise TypeError(
                f"Expected defaults for arguments of {cls.__mro__[1].__name__}, but got {unknown}."
            )
        signature = signature.replace(
            parameters=[
                p.replace(default=defaults[p.name]) if p.name in defaults else p
                for p in signature.parameters.values()
            ]
        )

        @functools.wraps(parent_init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            parent_init(*bound.args, **bound.kwargs)

        __init__.__signature__ = signature  # type: ignore[attr-defined]
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        del __init__.__wrapped__  # inspect must read the new signature, not the parent's
        cls.__init__ = __init__  # type: ignore[misc]
        return cls

    return decorate


def save_subclass_hparams(module: pl.LightningDataModule, ignore: list[str]) -> None:
    """Save the concrete data module's constructor arguments as ``module.hparams``.

    Called by a base class's ``__init__`` (``ImageDataModule``, ``CaptionDataModule``) so
    that every subclass's arguments are recorded once, there: Lightning reads them from the
    frame of the subclass's ``__init__`` (two frames up), not the base's forwarded ones. Does
    nothing when the base is not called from an ``__init__``.
    """
    frame = inspect.currentframe()
    caller = frame.f_back.f_back if frame is not None and frame.f_back is not None else None
    if caller is not None and caller.f_code.co_name == "__init__":
        module.save_hyperparameters(ignore=ignore, frame=caller)


def check_loader_options(batch_size: int, num_workers: int, seed: int) -> None:
    """The loader settings every data module takes: ``batch_size >= 1``, ``num_workers >= 0``
    and a training-order ``seed >= 0``."""
    check_int("batch_size", batch_size, 1)
    check_int("num_workers", num_workers, 0)
    check_int("seed", seed, 0)


def warn_if_resumed_differently(module: object, saved: Any, current: Any) -> None:
    """Warn when the data configuration a checkpoint recorded (``saved``; ``None``: none) is
    not this run's (``current``): the ``load_state_dict`` check of every data module.

    Example:
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_resumed_differently(object(), {"seed": 0}, {"seed": 1})
        >>> "will not see the same data" in str(caught[0].message)
        True
    """
    if saved is not None and saved != current:
        warnings.warn(
            f"{type(module).__name__}: the checkpoint was trained on {saved}, but this run is "
            f"configured as {current}; a resumed run will not see the same data. Pass the "
            "checkpoint's values to continue it exactly.",
            UserWarning,
            stacklevel=3,  # the caller of load_state_dict
        )


class ImageDataModule(pl.LightningDataModule):
    """Base class of the image data modules (not used directly).

    Every subclass exposes ``class_names``, ``num_classes``, ``image_size``, ``mean`` and ``std``
    from construction on (before ``setup``), and yields ``(image, target)`` batches, or
    ``(image, target, index)`` with ``return_index=True`` (``index`` = position in the split's
    dataset). Images are normalised with ``mean`` / ``std``.

    Training batches are shuffled by a :class:`ResumableRandomSampler` seeded with ``seed``:
    the order of epoch ``e`` depends only on ``(seed, e)``, so resuming from an epoch-end
    checkpoint reproduces the uninterrupted run's order. Random augmentations are not part of
    that guarantee: with ``num_workers=0`` they draw from the global torch RNG of the main
    process, with workers from per-worker seeds PyTorch derives from it.

    ``state_dict`` records what defines the training split (seed, label budget or shots, ...);
    ``load_state_dict`` warns when a resumed run is configured differently. The subclass's
    constructor arguments are its ``hparams`` (saved here, once for every subclass).
    """

    class_names: list[str]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __init__(
        self,
        *,
        batch_size: int,
        num_workers: int,
        seed: int,
        return_index: bool,
        train_samples_per_epoch: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        # class_names is left out: the resolved names are the model's hparam (linked by the
        # CLI), and Lightning refuses differing values for one key in model and data hparams.
        save_subclass_hparams(self, ignore=["class_names"])
        check_loader_options(batch_size, num_workers, seed)
        if train_samples_per_epoch is not None:
            check_int("train_samples_per_epoch", train_samples_per_epoch, 1)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.return_index = bool(return_index)
        self.train_samples_per_epoch = train_samples_per_epoch
        self.pin_memory = pin_memory
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self.train_sampler: ResumableRandomSampler | None = None

    # ----------------------------------------------------------------- attributes
    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    def _resolve_class_names(
        self, default: list[str], override: list[str] | None, num_classes: int
    ) -> list[str]:
        return check_class_names(default if override is None else override, num_classes)

    def _split_config(self) -> dict[str, Any]:
        """What defines the training split (subclasses add their label budget / shots)."""
        return {"seed": self.seed}

    # ----------------------------------------------------------------- loaders
    def _with_index(self, dataset: Dataset) -> Dataset:
        return IndexedDataset(dataset) if self.return_index else dataset

    def _require(self, dataset: Dataset | None, stage: str) -> Dataset:
        if dataset is None:
            raise RuntimeError(
                f"Expected `setup({stage!r})` to run before asking for the {stage} dataloader "
                f"(the Trainer calls it; call `dm.setup({stage!r})` when using {type(self).__name__} "
                "on its own)."
            )
        return dataset

    def _loader(self, dataset: Dataset, sampler: Any = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training loader (order a pure function of ``(seed, epoch)``)."""
        dataset = self._require(self.train_dataset, "fit")
        self.train_sampler = ResumableRandomSampler(
            len(dataset),  # type: ignore[arg-type]  # torch's Dataset declares no __len__
            seed=self.seed,
            num_samples=self.train_samples_per_epoch,
        )
        return self._loader(dataset, sampler=self.train_sampler)

    def val_dataloader(self) -> DataLoader:
        """Validation loader, in dataset order."""
        return self._loader(self._require(self.val_dataset, "validate"))

    def test_dataloader(self) -> DataLoader:
        """Test loader, in dataset order."""
        return self._loader(self._require(self.test_dataset, "test"))

    def predict_dataloader(self) -> DataLoader:
        """The test loader."""
        return self._loader(self._require(self.test_dataset, "predict"))

    # ----------------------------------------------------------------- checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """What defines the training split, saved in Lightning checkpoints."""
        return {"split": self._split_config()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Warn when the checkpoint's split differs from this module's configuration."""
        warn_if_resumed_differently(self, state_dict.get("split"), self._split_config())
