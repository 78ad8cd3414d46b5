"""``ConceptMonitor``: EXPLAIN-R's per-image concept explanations of a fixed probe set, logged
while the surrogate trains (a specialisation of :class:`ExplanationMonitor`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from lico_lightning._validation import check_int
from lico_lightning.callbacks.hosts import MonitorHost
from lico_lightning.callbacks.monitor import ExplanationMonitor, Stage
from lico_lightning.callbacks.probes import ProbeSet

__all__ = ["ConceptMonitor", "ConceptProbes"]


@dataclasses.dataclass
class ConceptProbes(ProbeSet):
    """Probe images as their concept vectors ``concepts`` ``(N, C)`` and dataset ``index`` ``(N,)``."""

    concepts: Tensor
    index: Tensor


def _as_concept_probes(probes: ProbeSet) -> ConceptProbes:
    if not isinstance(probes, ConceptProbes):
        raise TypeError(f"Expected ConceptProbes, but got {type(probes).__name__}.")
    return probes


class _ConceptEvaluation:
    """Sums (DDP-reduced in :meth:`compute`) of the top-1 weight, the top-k weight mass and the
    bias share over the explained probes."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64)  # top1, topk mass, bias, count

    def to(self, device: torch.device) -> _ConceptEvaluation:
        self.sums = self.sums.to(device)
        return self

    def fail_all(self, err: Exception) -> None:
        del err  # nothing explained on this rank: its sums stay as they are

    def add(self, weights: Tensor, bias_share: Tensor, k: int) -> None:
        top = weights.abs().topk(min(k, weights.shape[1]), dim=1)
        first = weights.gather(1, top.indices[:, :1])[:, 0]
        mass = weights.gather(1, top.indices).sum(1)
        self.sums += torch.stack(
            [first.sum(), mass.sum(), bias_share.sum(), torch.tensor(float(weights.shape[0]))]
        ).to(self.sums)

    def compute(self) -> dict[str, float]:
        sums = self.sums.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        n = float(sums[3])
        if n == 0:
            return {}
        return {
            "top1_weight": float(sums[0]) / n,
            "topk_weight": float(sums[1]) / n,
            "bias_weight": float(sums[2]) / n,
        }


class ConceptMonitor(ExplanationMonitor):
    """Log the top-``k`` concepts of fixed probe images on a schedule: values
    ``{prefix}/top1_weight``, ``{prefix}/topk_weight`` (weight mass of the k concepts shown) and
    ``{prefix}/bias_weight`` (see :func:`~lico_lightning.functional.concept_contributions`:
    all weights plus the bias share sum to 1), and an image listing each probe's concepts
    ("crane 0.18, dry (a.) 0.13, ...").

    Explains ``pl_module.explain(concepts, k)`` (a
    :class:`~lico_lightning.modules.SurrogateDistiller`) or, with ``model_attr``, the module
    found there. Probes are drawn from the validation set (items with ``"concepts"`` and
    ``"index"``, e.g. :class:`~lico_lightning.concepts.ConceptPairDataset`). Schedule, probe
    draw, fault isolation and no-perturbation guarantees are the base's.

    Args:
        k: concepts per image.
        prefix: first part of the logged keys.
        **kwargs: :class:`ExplanationMonitor` options (``every_n_epochs``, ``num_probes``, ...).
    """

    def __init__(self, k: int = 10, prefix: str = "concepts", **kwargs: Any) -> None:
        super().__init__(prefix=prefix, **kwargs)
        self.k = check_int("k", k, 1)

    def _probes_from_items(self, items: list[Any]) -> ProbeSet:
        return self._probes_from_batch(
            {
                "concepts": torch.stack([torch.as_tensor(i["concepts"]) for i in items]),
                "index": torch.as_tensor([int(i["index"]) for i in items]),
            }
        )

    def _probes_from_batch(self, batch: Any) -> ProbeSet:
        if not isinstance(batch, dict) or "concepts" not in batch or "index" not in batch:
            raise ValueError(
                "Expected probe items / batches with 'concepts' and 'index' (e.g. "
                f"ConceptPairDataset), but got {type(batch).__name__}."
            )
        concepts = batch["concepts"]
        concepts = concepts.to_dense() if concepts.is_sparse else concepts
        return ConceptProbes(concepts.float(), torch.as_tensor(batch["index"]).long())

    def _evaluation(self, stage: Stage) -> _ConceptEvaluation:
        return _ConceptEvaluation()

    def _check_model(self, model: nn.Module) -> None:
        if not callable(getattr(model, "explain", None)):
            raise TypeError(
                "Expected a module with `explain(concepts, k)` (a SurrogateDistiller), but got "
                f"{type(model).__name__}."
            )

    def _explain(self, model: nn.Module, evaluation: Any, probes: ProbeSet, stage: Stage) -> Any:
        self._check_model(model)
        probes = _as_concept_probes(probes)
        surrogate: Any = getattr(model, "surrogate")  # noqa: B009 (typed as Any on purpose)
        weights, bias_share = surrogate.contributions(probes.concepts)
        evaluation.add(weights, bias_share, self.k)
        # checked by _check_model; nn.Module.__getattr__ types it as Tensor | Module
        return model.explain(probes.concepts, self.k)  # type: ignore[operator]

    def _render(self, probes: ProbeSet, explained: Any, host: MonitorHost, step: int) -> Tensor:
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as err:
            raise ImportError(
                'Concept tables need matplotlib, which is not installed: pip install "lico-lightning[viz]".'
            ) from err
        probes = _as_concept_probes(probes)
        rows = explained[: self.num_images]
        fig = Figure(figsize=(9.0, 0.35 * len(rows) + 0.5), dpi=100)
        FigureCanvasAgg(fig)
        fig.text(0.01, 0.98, f"top-{self.k} concepts (step {step})", va="top", fontsize=9)
        for r, exp in enumerate(rows):
            line = f"image {int(probes.index[r])}: " + ", ".join(
                f"{name} {w:.2f}" for name, w in zip(exp.labels, exp.weights)
            )
            y = 1.0 - (r + 1.5) / (len(rows) + 1.5)
            fig.text(0.01, y, line, va="center", fontsize=7, family="monospace")
        fig.canvas.draw()
        # an Agg canvas method; matplotlib types fig.canvas as FigureCanvasBase
        rgba = np.asarray(fig.canvas.buffer_rgba()).copy()  # type: ignore[attr-defined]
        return torch.from_numpy(rgba)[..., :3].permute(2, 0, 1).float() / 255.0
