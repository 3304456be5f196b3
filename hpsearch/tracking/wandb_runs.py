"""Weights & Biases: one run per trial, grouped by study (`group=<study>`), offline by default.

Offline, runs are written under `dir` for a later `wandb sync`; online needs WANDB_API_KEY in the
environment. Not optuna-integration's `WeightsAndBiasesCallback`: it sees a trial only once it
has finished, so it has no per-epoch curves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import wandb

from hpsearch.spec import WandbTracking
from hpsearch.tracking.types import TrialInfo, TrialState


class WandbTracker:
    """See the module docstring."""

    def __init__(self, spec: WandbTracking, base: Path) -> None:
        self._spec = spec
        self._dir = (base / spec.dir).resolve()
        self._runs: dict[int, Any] = {}

    def start(self, trial: TrialInfo) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        self._runs[trial.number] = wandb.init(
            project=self._spec.project or trial.study,
            entity=self._spec.entity,
            mode=self._spec.mode,
            dir=str(self._dir),
            group=trial.study,
            name=f"trial-{trial.number:05d}",
            config=dict(trial.params),
            tags=[f"trial-{trial.number}"],
            reinit="create_new",  # one run per trial, several in one worker process
        )

    def step(self, trial: TrialInfo, metrics: Mapping[str, float], step: int) -> None:
        self._runs[trial.number].log({k: float(v) for k, v in metrics.items()}, step=step)

    def finish(
        self,
        trial: TrialInfo,
        state: TrialState,
        values: Sequence[float] | None,
        checkpoint: str | None,
    ) -> None:
        run = self._runs.pop(trial.number, None)
        if run is None:
            return
        run.summary["state"] = state
        for i, value in enumerate(values or ()):
            run.summary[f"value_{i}"] = float(value)
        if checkpoint is not None:
            run.summary["checkpoint"] = checkpoint
        run.finish(exit_code=1 if state == "FAIL" else 0)
