"""``torchmetrics.Metric`` classes (DDP-correct accumulators over the functional formulas)."""
