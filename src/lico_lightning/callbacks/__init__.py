"""Lightning callbacks (one file each)."""

# --- saliency monitoring (issue 3) ---
from lico_lightning.callbacks.saliency_monitor import SaliencyMonitor, render_overlays

__all__ = ["SaliencyMonitor", "render_overlays"]
