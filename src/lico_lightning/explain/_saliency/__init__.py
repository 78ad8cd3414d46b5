"""Classifier saliency explainers (private room; import from :mod:`lico_lightning.explain`)."""
