"""``SaliencyMonitor``: watch saliency maps and their quality evolve during training.

On a fixed probe set the callback computes chosen explainers (Grad-CAM, Grad-CAM++, Score-CAM,
RISE, or any registered one) and metrics (insertion / deletion / overall, average drop,
increase in confidence, pointing games), logs them as ``saliency/{method}/{metric}`` through
``pl_module.log`` (so ``ModelCheckpoint`` / ``EarlyStopping`` can monitor them) and logs overlay
images through the attached logger(s). It never perturbs training (see the class docstring).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lico_lightning._safety import preserve_model_state
from lico_lightning._validation import check_choice, check_positive
from lico_lightning.explain.base import Explainer, build_explainers
from lico_lightning.explain.evaluation import (
    BOX_METRICS,
    SaliencyMetricOptions,
    check_method_names,
    check_metric_names,
    compute_saliency_metrics,
    explained_target,
    parse_batch,
)

__all__ = ["SaliencyMonitor", "render_overlays"]


@contextmanager
def _preserve_rng_state() -> Iterator[None]:
    """Restore torch (CPU and every initialised CUDA device), numpy and ``random`` RNG states."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    np_state = np.random.get_state()  # noqa: NPY002 - the legacy global RNG is what we protect
    py_state = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)


# ------------------------------------------------------------------------------------------
# overlay rendering
# ------------------------------------------------------------------------------------------
def _jet(values: Tensor) -> Tensor:
    """Jet colormap: ``(B, H, W)`` in [0, 1] → ``(B, 3, H, W)`` in [0, 1]."""
    v = values.clamp(0, 1)[:, None]
    r = (1.5 - (4 * v - 3).abs()).clamp(0, 1)
    g = (1.5 - (4 * v - 2).abs()).clamp(0, 1)
    b = (1.5 - (4 * v - 1).abs()).clamp(0, 1)
    return torch.cat([r, g, b], 1)


def _displayable(
    images: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> Tensor:
    x = images.detach().float().cpu()
    if mean is not None and std is not None:
        m = torch.tensor(list(mean), dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(list(std), dtype=x.dtype).view(1, -1, 1, 1)
        x = x * s + m
    else:  # per-image min-max
        flat = x.flatten(1)
        lo, hi = flat.amin(1).view(-1, 1, 1, 1), flat.amax(1).view(-1, 1, 1, 1)
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    x = x.clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        x = x.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    return x


def render_overlays(
    images: Tensor,
    saliency: Mapping[str, Tensor],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    alpha: float = 0.5,
    min_size: int = 64,
) -> Tensor:
    """One image grid: a row per image, columns = the image, then one jet overlay per method.

    Args:
        images: ``(B, C, H, W)`` normalised images.
        saliency: ``{method: (B, H, W)}`` maps in ``[0, 1]``.
        mean: per-channel mean used for normalisation (``None`` → per-image min-max display).
        std: per-channel std.
        alpha: heat-map opacity.
        min_size: small images are upscaled (nearest) to at least this many pixels.

    Returns:
        ``(3, H', W')`` float grid in ``[0, 1]``.

    Example:
        >>> render_overlays(torch.rand(2, 1, 8, 8), {"gradcam": torch.rand(2, 8, 8)}).shape
        torch.Size([3, 134, 134])
    """
    from torchvision.utils import make_grid

    base = _displayable(images, mean, std)
    tiles = [base]
    for maps in saliency.values():
        tiles.append((1 - alpha) * base + alpha * _jet(maps.detach().float().cpu()))
    grid = torch.stack(tiles, 1).flatten(0, 1)  # (B * (1 + M), 3, H, W), row-major per image
    scale = max(1, math.ceil(min_size / max(1, min(grid.shape[-2:]))))
    if scale > 1:
        grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="nearest")
    return make_grid(grid, nrow=len(tiles), padding=2, pad_value=1.0)


# ------------------------------------------------------------------------------------------
# the callback
# ------------------------------------------------------------------------------------------
class SaliencyMonitor(Callback):
    r"""Compute and log saliency maps and their quality on a fixed probe set during ``fit``.

    **Schedule.** With ``every_n_epochs=k`` it runs once in every k-th epoch, at the end of
    that epoch's (first) validation run — before ``ModelCheckpoint`` / ``EarlyStopping`` read
    the logged values — or at the end of the training epoch if no validation ran. With
    ``every_n_train_steps=k`` it runs after every k-th optimizer step (``on_train_batch_end``;
    the values go to ``callback_metrics`` through ``pl_module.log(on_step=True, logger=False)``
    and straight to the loggers at ``step=global_step``, independent of
    ``Trainer(log_every_n_steps)``). The sanity-check validation is skipped.

    **Probe set.** Either given (``probe_images``, ``probe_targets``, optional ``probe_boxes``),
    or ``num_probes`` samples drawn once from the validation dataset (the training dataset if
    there is none) with a ``torch.Generator`` seeded by ``seed``. The drawn indices are part
    of :meth:`state_dict`, so a resumed run explains the same images.

    **Logged values.** ``{prefix}/{method}/{metric}`` via ``pl_module.log`` — e.g.
    ``saliency/gradcam/overall`` (LICO's insertion − deletion) — and an overlay grid per run:
    TensorBoard ``add_image``, loggers with ``log_image`` (W&B), otherwise PNG files under
    ``{log_dir}/saliency/`` (CSVLogger, no logger).

    **DDP.** Every rank holds the same probe set (same seed, same dataset) and explains its
    shard ``probe[rank::world_size]``; per-metric sums and counts are all-reduced in a single
    collective that every rank reaches even when an explainer failed, so the values equal the
    single-process ones and nothing can deadlock. Images are logged from rank 0's shard.

    **No perturbation.** The model runs in eval mode and every module's ``training`` flag and
    ``requires_grad`` is restored; gradients are taken w.r.t. hooked activations only
    (parameter ``.grad`` untouched); the torch (CPU/CUDA), numpy and ``random`` RNG states are
    restored; explainers use their own seeded generators. A run with the monitor produces the
    same weights as a run without it.

    **Fault isolation.** An exception inside a method (or the whole run) becomes a
    ``rank_zero_warn`` and training goes on; a method that failed on any rank logs nothing
    for that run.

    Args:
        methods: explainer names (``lico_lightning.explain.list_explainers()``).
        metrics: metric names (``lico_lightning.explain.list_saliency_metrics()``);
            ``pointing_game`` / ``energy_pointing_game`` need probe boxes.
        every_n_epochs: run every k epochs (default 1 when neither schedule is given).
        every_n_train_steps: run every k optimizer steps instead.
        num_probes: size of the drawn probe set.
        probe_images: ``(N, C, H, W)`` explicit probe images (normalised like the data).
        probe_targets: ``(N,)`` their labels.
        probe_boxes: ``N`` tensors ``(K_i, 4)`` of ``(x1, y1, x2, y2)`` pixel boxes.
        seed: seed of the probe draw.
        target: explain the model's ``"predicted"`` class (the evaluation protocol) or the
            ``"label"``.
        layer: target layer (dotted name) for CAM methods; ``None`` → the model's declared
            default, else its last spatial feature map.
        explainer_kwargs: per-method keyword arguments, e.g. ``{"rise": {"num_masks": 500}}``.
        model_attr: explain ``pl_module.<model_attr>`` (dotted) instead of ``pl_module``; it
            must return logits.
        step_fraction: insertion/deletion step on the probe set during ``fit``. The default 0.1
            (11 steps on any image size) keeps the monitor cheap; the values track the paper's
            3.6 % protocol closely but are not identical.
        test_step_fraction: the step of the ``trainer.test`` evaluation (LICO: 0.036).
        deletion_substrate: ``"blur"`` or ``"zero"``.
        blur_kernel_size: Gaussian kernel of the blurred image (RISE: 11 at 224 px).
        blur_sigma: its sigma (RISE: 5).
        chunk_size: perturbed images per forward pass.
        tolerance: pointing-game tolerance in pixels.
        log_images: log overlay grids.
        num_images: at most this many probe images in a grid.
        mean: per-channel normalisation mean for display (``None`` → the datamodule's
            ``mean`` if any, else per-image min-max).
        std: per-channel normalisation std for display.
        prefix: first part of the logged keys.
        evaluate_test: during ``trainer.test`` (e.g. ``lico-lightning test --config ...
            --ckpt_path ...``) explain every test batch and log the dataset means as
            ``test/{prefix}/{method}/{metric}`` — the LICO Table 1 protocol on the whole test
            set (pointing games when the batches carry boxes).

    Example:
        >>> monitor = SaliencyMonitor(methods=["gradcam"], metrics=["insertion", "deletion", "overall"])
        >>> monitor.state_key
        "SaliencyMonitor{'methods': ['gradcam'], 'every_n_epochs': 1, 'every_n_train_steps': None, 'prefix': 'saliency'}"
    """

    def __init__(
        self,
        methods: Sequence[str] = ("gradcam",),
        metrics: Sequence[str] = ("insertion", "deletion", "overall"),
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        num_probes: int = 16,
        probe_images: Tensor | None = None,
        probe_targets: Tensor | None = None,
        probe_boxes: Sequence[Tensor] | None = None,
        seed: int = 0,
        target: Literal["predicted", "label"] = "predicted",
        layer: str | None = None,
        explainer_kwargs: dict[str, dict[str, Any]] | None = None,
        model_attr: str | None = None,
        step_fraction: float = 0.1,
        test_step_fraction: float = 0.036,
        deletion_substrate: Literal["blur", "zero"] = "blur",
        blur_kernel_size: int = 11,
        blur_sigma: float = 5.0,
        chunk_size: int = 64,
        tolerance: float = 15.0,
        log_images: bool = True,
        num_images: int = 8,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        prefix: str = "saliency",
        evaluate_test: bool = True,
    ) -> None:
        super().__init__()
        self.methods = check_method_names(methods)
        self.metrics = check_metric_names(metrics)
        if not self.methods or not self.metrics:
            raise ValueError(
                f"Expected at least one method and one metric, but got {self.methods} and {self.metrics}."
            )
        if every_n_epochs is None and every_n_train_steps is None:
            every_n_epochs = 1
        if every_n_epochs is not None and every_n_train_steps is not None:
            raise ValueError(
                "Expected only one of `every_n_epochs` and `every_n_train_steps`, but got "
                f"{every_n_epochs} and {every_n_train_steps}."
            )
        for name, value in (
            ("every_n_epochs", every_n_epochs),
            ("every_n_train_steps", every_n_train_steps),
        ):
            if value is not None:
                check_positive(name, value)
        check_positive("num_probes", num_probes)
        check_positive("num_images", num_images, strict=False)
        check_choice("target", target, ["predicted", "label"])
        if (probe_images is None) != (probe_targets is None):
            raise ValueError(
                "Expected `probe_images` and `probe_targets` together, but got only one of them."
            )
        if probe_images is not None:
            if not isinstance(probe_images, Tensor) or probe_images.ndim != 4:
                raise ValueError(
                    f"Expected `probe_images` of shape (N, C, H, W), but got {getattr(probe_images, 'shape', type(probe_images))}."
                )
            if (
                not isinstance(probe_targets, Tensor)
                or probe_targets.shape != probe_images.shape[:1]
            ):
                raise ValueError(
                    f"Expected `probe_targets` of shape ({probe_images.shape[0]},), but got "
                    f"{getattr(probe_targets, 'shape', type(probe_targets))}."
                )
            if probe_boxes is not None and len(probe_boxes) != probe_images.shape[0]:
                raise ValueError(
                    f"Expected {probe_images.shape[0]} entries in `probe_boxes`, but got {len(probe_boxes)}."
                )
        if probe_boxes is not None and probe_images is None:
            raise ValueError("Expected `probe_boxes` only together with `probe_images`.")
        self.options = SaliencyMetricOptions(
            step_fraction=step_fraction,
            deletion_substrate=deletion_substrate,
            blur_kernel_size=blur_kernel_size,
            blur_sigma=blur_sigma,
            chunk_size=chunk_size,
            tolerance=tolerance,
        )
        self.test_options = dataclasses.replace(self.options, step_fraction=test_step_fraction)
        self.every_n_epochs = every_n_epochs
        self.every_n_train_steps = every_n_train_steps
        self.num_probes = num_probes
        self.seed = seed
        self.target = target
        self.layer = layer
        self.explainer_kwargs = {k: dict(v) for k, v in (explainer_kwargs or {}).items()}
        self.model_attr = model_attr
        self.log_images = log_images
        self.num_images = num_images
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        self.prefix = prefix

        self._given = (
            (
                probe_images.detach().cpu(),
                probe_targets.detach().cpu().long(),
                list(probe_boxes) if probe_boxes is not None else None,
            )
            if probe_images is not None
            else None
        )
        self._probe: tuple[Tensor, Tensor, list[Tensor] | None] | None = None
        self.probe_indices: list[int] | None = None
        self.last_epoch = -1
        self.last_step = -1
        self.num_runs = 0
        self._explainers: dict[str, Explainer] = {}
        self._explained_model: nn.Module | None = None
        self._warned_boxes = False
        self._test_acc: _Accumulator | None = None
        self.evaluate_test = evaluate_test
        self.last_results: dict[str, float] = {}
        self.test_results: dict[str, float] = {}

    # -------------------------------------------------------------------- state
    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            methods=self.methods,
            every_n_epochs=self.every_n_epochs,
            every_n_train_steps=self.every_n_train_steps,
            prefix=self.prefix,
        )

    @override
    def state_dict(self) -> dict[str, Any]:
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

    # -------------------------------------------------------------------- hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._model(pl_module)  # fail early on a wrong `model_attr`

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        n = self.every_n_train_steps
        step = trainer.global_step
        if n is None or step == 0 or step % n != 0 or step == self.last_step:
            return
        self.last_step = step
        self._run(trainer, pl_module, on_step=True)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._maybe_run_epoch(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_run_epoch(trainer, pl_module)

    def _maybe_run_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        n = self.every_n_epochs
        epoch = trainer.current_epoch
        if n is None or (epoch + 1) % n != 0 or epoch == self.last_epoch:
            return
        self.last_epoch = epoch
        self._run(trainer, pl_module, on_step=False)

    # -------------------------------------------------------------------- work
    def _model(self, pl_module: pl.LightningModule) -> nn.Module:
        if self.model_attr is None:
            return pl_module
        obj: Any = pl_module
        for part in self.model_attr.split("."):
            if not hasattr(obj, part):
                raise ValueError(
                    f"Expected `model_attr` to name a submodule of {type(pl_module).__name__}, but got "
                    f"{self.model_attr!r} ({part!r} not found)."
                )
            obj = getattr(obj, part)
        if not isinstance(obj, nn.Module):
            raise TypeError(
                f"Expected `model_attr` to name an nn.Module, but got {type(obj).__name__}."
            )
        return obj

    def _get_explainers(self, model: nn.Module) -> dict[str, Explainer]:
        if self._explained_model is not model:
            self._explainers = build_explainers(
                model, self.methods, self.layer, self.explainer_kwargs
            )
            self._explained_model = model
        return self._explainers

    def _probe_dataset(self, trainer: pl.Trainer) -> Any:
        for loaders in (trainer.val_dataloaders, trainer.train_dataloader):
            if loaders is None:
                continue
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            if isinstance(loaders, Mapping):
                loader = next(iter(loaders.values()))
            dataset = getattr(loader, "dataset", None)
            if dataset is not None:
                return dataset
        raise RuntimeError("SaliencyMonitor found no dataloader to draw probe images from.")

    def _draw_probe(self, trainer: pl.Trainer) -> tuple[Tensor, Tensor, list[Tensor] | None]:
        if self._given is not None:
            return self._given
        dataset = self._probe_dataset(trainer)
        try:
            size = len(dataset)
        except TypeError:
            raise RuntimeError(
                "SaliencyMonitor needs a map-style dataset (with __len__) to draw probes from; "
                "pass `probe_images` and `probe_targets` instead."
            ) from None
        if self.probe_indices is None or any(i >= size for i in self.probe_indices):
            generator = torch.Generator().manual_seed(self.seed)
            self.probe_indices = torch.randperm(size, generator=generator)[
                : self.num_probes
            ].tolist()
            rank_zero_info(
                f"SaliencyMonitor: probe set = {len(self.probe_indices)} samples (seed {self.seed})."
            )
        images, labels, boxes = [], [], []
        for i in self.probe_indices:
            image, label, box = _parse_sample(dataset[i])
            images.append(image)
            labels.append(label)
            boxes.append(box)
        has_boxes = all(b is not None for b in boxes)
        return torch.stack(images), torch.stack(labels).long(), (boxes if has_boxes else None)  # type: ignore[arg-type]

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, on_step: bool) -> None:
        acc = _Accumulator(self.methods, self.metrics)
        maps: dict[str, Tensor] = {}
        shard_images: Tensor | None = None
        with _preserve_rng_state():
            try:
                model = self._model(pl_module)
                with preserve_model_state(model, eval_mode=False):
                    if self._probe is None:
                        self._probe = self._draw_probe(trainer)
                    images, labels, boxes = self._probe
                    rank, world = trainer.global_rank, trainer.world_size
                    images, labels = images[rank::world], labels[rank::world]
                    boxes = boxes[rank::world] if boxes is not None else None
                    if images.shape[0] > 0:
                        shard_images = images
                        maps = self._accumulate(
                            acc, model, pl_module, images, labels, boxes, self.options
                        )
            except Exception as err:
                acc.fail_all(err)
            try:
                self._reduce_and_log(trainer, pl_module, acc, self.prefix, on_step)
                if self.log_images and trainer.is_global_zero and maps and shard_images is not None:
                    self._log_images(trainer, shard_images[: self.num_images], maps)
            except Exception as err:
                rank_zero_warn(
                    f"SaliencyMonitor: logging failed ({type(err).__name__}: {err}); training continues."
                )
        self.num_runs += 1

    def _accumulate(
        self,
        acc: _Accumulator,
        model: nn.Module,
        pl_module: pl.LightningModule,
        images: Tensor,
        labels: Tensor,
        boxes: list[Tensor] | None,
        options: SaliencyMetricOptions,
    ) -> dict[str, Tensor]:
        """Explain one batch with every method and add its metric sums to ``acc``."""
        metrics = [m for m in self.metrics if boxes is not None or m not in BOX_METRICS]
        if len(metrics) < len(self.metrics) and not self._warned_boxes:
            self._warned_boxes = True
            rank_zero_warn(
                f"SaliencyMonitor: {sorted(set(self.metrics) - set(metrics))} need boxes, but the "
                "images have none; those metrics are skipped."
            )
        device = pl_module.device
        images, labels = images.to(device), labels.to(device)
        explained, clean_probability = explained_target(model, images, labels, self.target)
        explainers = self._get_explainers(model)
        maps: dict[str, Tensor] = {}
        for name in self.methods:
            try:
                saliency = explainers[name].attribute(images, explained)
                if metrics:
                    values = compute_saliency_metrics(
                        model,
                        images,
                        saliency,
                        explained,
                        metrics,
                        boxes,
                        options,
                        clean_probability,
                    )
                    acc.add(name, values)
                maps[name] = saliency
            except Exception as err:  # fault isolation: warn, keep training
                acc.fail(name, err)
        return maps

    def _reduce_and_log(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        acc: _Accumulator,
        prefix: str,
        on_step: bool,
    ) -> dict[str, float]:
        results = acc.reduce(trainer, pl_module.device, prefix)
        if prefix == self.prefix:
            self.last_results = results
        for key, value in results.items():
            pl_module.log(
                key,
                value,
                on_step=on_step,
                on_epoch=not on_step,
                prog_bar=False,
                # step-level logs reach the loggers only every `log_every_n_steps`: write those
                # directly below, keep `pl_module.log` for callback_metrics (checkpointing)
                # (test results are always logger=True: `trainer.test` returns and prints those)
                logger=not on_step and (bool(trainer.loggers) or prefix != self.prefix),
                sync_dist=False,  # already reduced: identical on every rank
                rank_zero_only=False,
                add_dataloader_idx=False,
                batch_size=1,
            )
        if on_step and results and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(results, step=trainer.global_step)
        return results

    # -------------------------------------------------------------------- test stage
    @override
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._test_acc = _Accumulator(self.methods, self.metrics) if self.evaluate_test else None

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
        if self._test_acc is None:
            return
        with _preserve_rng_state():
            try:
                model = self._model(pl_module)
                with preserve_model_state(model, eval_mode=False):
                    images, labels, boxes = parse_batch(batch)
                    self._accumulate(
                        self._test_acc, model, pl_module, images, labels, boxes, self.test_options
                    )
            except Exception as err:
                self._test_acc.fail_all(err)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._test_acc is None:
            return
        try:
            self.test_results = self._reduce_and_log(
                trainer, pl_module, self._test_acc, f"test/{self.prefix}", on_step=False
            )
        except Exception as err:
            rank_zero_warn(f"SaliencyMonitor: test logging failed ({type(err).__name__}: {err}).")
        self._test_acc = None

    def _log_images(self, trainer: pl.Trainer, images: Tensor, maps: dict[str, Tensor]) -> None:
        mean, std = self.mean, self.std
        datamodule = getattr(trainer, "datamodule", None)
        if mean is None and datamodule is not None:
            mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        grid = render_overlays(
            images, {k: v[: images.shape[0]] for k, v in maps.items()}, mean, std
        )
        tag = f"{self.prefix}/overlays"
        step = trainer.global_step
        loggers = list(trainer.loggers)
        written = False
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(tag, grid, global_step=step)
                written = True
            elif callable(getattr(logger, "log_image", None)):
                logger.log_image(key=tag, images=[grid], step=step)
                written = True
        if not written:
            root = next((lg.log_dir for lg in loggers if getattr(lg, "log_dir", None)), None)
            directory = Path(root or trainer.default_root_dir) / self.prefix
            directory.mkdir(parents=True, exist_ok=True)
            from torchvision.utils import save_image

            save_image(
                grid, directory / f"overlays_epoch{trainer.current_epoch:03d}_step{step:06d}.png"
            )


class _Accumulator:
    """Per-method metric sums / counts / failure flags, reduced across ranks in one collective."""

    def __init__(self, methods: list[str], metrics: list[str]) -> None:
        self.methods, self.metrics = methods, metrics
        self.sums = torch.zeros(len(methods), len(metrics), dtype=torch.float64)
        self.counts = torch.zeros(len(methods), len(metrics), dtype=torch.float64)
        self.failed = torch.zeros(len(methods), dtype=torch.float64)
        self.errors: dict[str, str] = {}

    def add(self, method: str, values: Mapping[str, tuple[Tensor, Tensor]]) -> None:
        i = self.methods.index(method)
        for j, metric in enumerate(self.metrics):
            if metric in values:
                v, valid = values[metric]
                self.sums[i, j] += (v.double() * valid).sum().cpu()
                self.counts[i, j] += valid.sum().cpu()

    def fail(self, method: str, err: Exception) -> None:
        self.failed[self.methods.index(method)] = 1
        self.errors.setdefault(method, f"{type(err).__name__}: {err}")

    def fail_all(self, err: Exception) -> None:
        self.failed[:] = 1
        self.errors.setdefault("*", f"{type(err).__name__}: {err}")

    def reduce(self, trainer: pl.Trainer, device: torch.device, prefix: str) -> dict[str, float]:
        """Sum over ranks (every rank must call this), warn about failures, return the means."""
        packed = torch.cat([self.sums.flatten(), self.counts.flatten(), self.failed]).to(device)
        if trainer.world_size > 1:
            packed = trainer.strategy.reduce(packed, reduce_op="sum")
        packed = packed.cpu()
        n = self.sums.numel()
        sums, counts = packed[:n].view_as(self.sums), packed[n : 2 * n].view_as(self.counts)
        failed = packed[2 * n :]
        results: dict[str, float] = {}
        for i, name in enumerate(self.methods):
            if failed[i] > 0:
                reason = self.errors.get(name) or self.errors.get("*") or "an error on another rank"
                rank_zero_warn(
                    f"SaliencyMonitor: method {name!r} failed on {int(failed[i])} rank(s) or "
                    f"batch(es) ({reason}); nothing logged for it this time, training continues."
                )
                continue
            for j, metric in enumerate(self.metrics):
                if counts[i, j] > 0:
                    results[f"{prefix}/{name}/{metric}"] = float(sums[i, j] / counts[i, j])
        return results


def _parse_sample(sample: Any) -> tuple[Tensor, Tensor, Tensor | None]:
    """One dataset item → ``(image (C, H, W), label (), boxes (K, 4) | None)``."""
    if isinstance(sample, Mapping):
        image = next((sample[k] for k in ("image", "images") if k in sample), None)
        label = next((sample[k] for k in ("target", "label", "labels") if k in sample), None)
        boxes = sample.get("boxes")
    elif isinstance(sample, (tuple, list)) and len(sample) >= 2:
        image, label = sample[0], sample[1]
        boxes = next(
            (e for e in sample[2:] if isinstance(e, Tensor) and e.ndim == 2 and e.shape[-1] == 4),
            None,
        )
    else:
        image = label = boxes = None
    if not isinstance(image, Tensor):
        raise TypeError(
            "Expected dataset items (image, target[, index | boxes]) or mappings with 'image' and "
            f"'target', but got {type(sample).__name__}."
        )
    return image, torch.as_tensor(label), boxes
