"""lico-lightning: PyTorch Lightning plugins for explainability-aware training.

Layers (dependencies point down):

* :mod:`lico_lightning.functional` — pure torch math (losses, attribution algebra, metric formulas).
* :mod:`lico_lightning.losses`, :mod:`lico_lightning.metrics`, :mod:`lico_lightning.explain`,
  :mod:`lico_lightning.text`, :mod:`lico_lightning.models` — stateful ``nn.Module`` /
  ``torchmetrics.Metric`` wrappers and explainers.
* :mod:`lico_lightning.modules`, :mod:`lico_lightning.callbacks`, :mod:`lico_lightning.data` —
  Lightning orchestration.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lico-lightning")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
