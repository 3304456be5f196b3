"""Each trial also sent to the lab's experiment trackers: MLflow, TensorBoard, W&B (`tracking:`).

`types` (what a tracker is told of a trial), `trackers` (the trackers of a study file, the
extra a missing package is in), `mlflow_runs`, `tensorboard_events`, `wandb_runs` (one module
per tracker, each importing its package, so only the trackers a study names are imported). The
objective layer tells the trackers of each trial's start, reported steps and end; nothing here
imports optuna.
"""

from __future__ import annotations

from hpsearch.tracking.trackers import EXTRAS, Trackers, missing_extra, open_trackers
from hpsearch.tracking.types import Tracker, TrialInfo, TrialState

__all__ = [
    "EXTRAS",
    "Tracker",
    "Trackers",
    "TrialInfo",
    "TrialState",
    "missing_extra",
    "open_trackers",
]
