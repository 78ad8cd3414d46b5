"""Image backbones (feature-map extractors) and their registry."""
