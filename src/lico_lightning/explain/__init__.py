"""Explainers: saliency for classifiers and interaction attributions for dual encoders."""
