"""Dual-encoder pair explainers (private room; import from :mod:`lico_lightning.explain`)."""
