"""The built-in image-classification trainer; this package root stays free of torch imports."""

# The torch-heavy parts are imported from their modules, only where needed:
# `hpsearch.train.loop.fit`, `hpsearch.train.summary.summarize`,
# `hpsearch.train.models.build_model`, `hpsearch.train.checkpoints.load_checkpoint`.

from __future__ import annotations

from hpsearch.train.options import (
    METRICS,
    MODEL_NAMES,
    SEARCHABLE_OPTIONS,
    DatasetOptions,
    TrainerOptions,
    metric_mode,
)

__all__ = [
    "METRICS",
    "MODEL_NAMES",
    "SEARCHABLE_OPTIONS",
    "DatasetOptions",
    "TrainerOptions",
    "metric_mode",
]
