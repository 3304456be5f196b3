"""The `report(metrics, step)` a trial's code is given: record, prune, tell the trackers.

It records the study's metric on the Optuna trial and raises `optuna.TrialPruned` when the pruner
says so. A prune is final: code that catches it to stop its training cleanly (the Lightning and
Hugging Face callbacks of `hpsearch.integrations` do, so the trainer saves and closes as after
its last epoch) and returns still ends the trial PRUNED. It also gives the trial's code the
trial's number, a folder of its own, and `keep_checkpoint(path)` to name the checkpoint that
`hpsearch best` shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna

from hpsearch.budget import BudgetSpent
from hpsearch.errors import ObjectiveError
from hpsearch.objective.checkpoints import CHECKPOINT_ATTR
from hpsearch.objective.types import Metrics
from hpsearch.spec import StudySpec
from hpsearch.storage.attrs import PRUNE_REASON_ATTR
from hpsearch.storage.optuna_compat import trial_intermediate_values
from hpsearch.study import MetricLog
from hpsearch.tracking import Trackers, TrialInfo

Observe = Callable[[optuna.Trial, int, float], None]


class TrialReporter:
    """See the module docstring. Called as `report(metrics_or_number, step)`."""

    def __init__(
        self,
        trial: optuna.Trial,
        spec: StudySpec,
        *,
        observe: Observe | None = None,
        trackers: Trackers | None = None,
        info: TrialInfo | None = None,
        artifacts: Path | None = None,
        metrics: MetricLog | None = None,
    ) -> None:
        self._trial = trial
        self._metrics = metrics  # every metric reported, kept with the trial when it ends
        self._metric = spec.metrics[0]
        self._multi = len(spec.study_directions) > 1
        self._observe = observe
        self._trackers = trackers
        self._info = info
        self._artifacts = artifacts
        self.pruned: optuna.TrialPruned | None = None  # the prune, once decided

    @property
    def trial_number(self) -> int:
        return self._trial.number

    @property
    def directory(self) -> Path:
        """A folder for this trial alone (checkpoints, logs), made on first use."""
        base = self._artifacts if self._artifacts is not None else Path("hpsearch-trials")
        folder = base / "trials" / f"trial-{self._trial.number:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def keep_checkpoint(self, path: str | Path) -> None:
        """Name this trial's checkpoint: its `checkpoint` attribute, which `hpsearch best`
        shows, and the MLflow artifact of `tracking:`."""
        self._trial.set_user_attr(CHECKPOINT_ATTR, str(Path(path).resolve()))

    def __call__(self, value: Metrics | float, step: int) -> None:
        if self.pruned is not None:
            raise self.pruned  # reported again after the prune: still pruned
        if self._metrics is not None:
            self._metrics.add(value, step)
        number = pick(value, self._metric)
        if self._recorded(step):
            # A resumed trial reporting again an epoch that its earlier try recorded (copied
            # into it when it was queued): recorded once, claimed from the budget once.
            return
        if self._observe is not None:
            self._observe(self._trial, step, number)
        if self._trackers and self._info is not None:
            self._trackers.step(self._info, _numbers(value, self._metric, number), step)
        if self._multi:
            # Optuna prunes single-objective studies only; keep the curve for inspection.
            self._trial.set_user_attr(f"{self._metric}@{step}", number)
            return
        try:
            self._trial.report(number, step)
        except BudgetSpent:
            # The study's epoch budget is spent: this epoch is not recorded, the trial ends
            # with what it has (PRUNED keeps its curve; the sampler learns nothing false).
            self._trial.set_user_attr(PRUNE_REASON_ATTR, "budget.epochs spent")
            self._prune(f"the study's epoch budget is spent at step {step}")
        if self._trial.should_prune():
            self._trial.set_user_attr(
                PRUNE_REASON_ATTR, f"{self._metric}={number:.6g} at step {step}"
            )
            self._prune(f"pruned at step {step} with {self._metric}={number:.6g}")

    def _recorded(self, step: int) -> bool:
        if self._multi:
            return f"{self._metric}@{step}" in self._trial.user_attrs
        return step in trial_intermediate_values(self._trial)

    def _prune(self, message: str) -> None:
        self.pruned = optuna.TrialPruned(message)
        raise self.pruned from None


def pick(value: Any, metric: str) -> float:
    """The number `metric` from what an objective reported or returned.

    Raises:
        ObjectiveError: the metric is missing, not a number, or NaN.
    """
    if isinstance(value, Mapping):
        if metric not in value:
            raise ObjectiveError(
                f"the objective reported {', '.join(map(str, value)) or 'nothing'} but not the "
                f"study's metric {metric!r}; report it or change `metric:`"
            )
        value = value[metric]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ObjectiveError(f"a reported value must be a number, but got {value!r}")
    number = float(value)
    if math.isnan(number):
        raise ObjectiveError(f"{metric} is NaN; the training diverged")
    if math.isinf(number):  # never a best value, never a reached target
        raise ObjectiveError(f"{metric} is {number} (infinite); the training diverged")
    return number


def _numbers(value: Metrics | float, metric: str, number: float) -> dict[str, float]:
    """Every number reported (trackers plot them all), not only the study's metric."""
    if not isinstance(value, Mapping):
        return {metric: number}
    return {
        k: float(v)
        for k, v in value.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
