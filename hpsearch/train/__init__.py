"""The built-in image-classification trainer; this package root stays free of torch imports.

Import the heavy parts from their modules: `hpsearch.train.loop.fit`,
`hpsearch.train.data.summarize`, `hpsearch.train.models.build_model`,
`hpsearch.train.checkpoints.keep_best_checkpoints`.
"""

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
