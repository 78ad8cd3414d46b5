"""One quiet single-process CPU ``Trainer`` for the tests (no logger, checkpoints, progress bar
or model summary); each test file passes what it varies."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


def quiet_trainer(root: Any = None, **kwargs: Any) -> pl.Trainer:
    """``pl.Trainer`` on one CPU device writing under ``root``; ``kwargs`` override anything."""
    base: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    return pl.Trainer(**{**base, **kwargs})
