"""Lightning callbacks (one file each)."""

from lico_lightning.callbacks.saliency_monitor import SaliencyMonitor, render_overlays

__all__ = [
    "SaliencyMonitor",
    "render_overlays",
]
