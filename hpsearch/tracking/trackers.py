"""The trackers a study file names, told together; the extra a missing one is in.

A tracker sees a trial three times: when it starts (its parameters, readable: `batch_size: 32`,
not Optuna's exponent), at every reported step (every metric the objective reported, not only
the study's), and when it ends (COMPLETE, PRUNED or FAIL, its values, its kept checkpoint).
A tracker that fails (a tracking server away) never fails the trial: the error is logged once
per trial and the study goes on; the trial is then missing from that tracker.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hpsearch.errors import HpsearchError
from hpsearch.spec import Tracking
from hpsearch.tracking.types import Tracker, TrialInfo, TrialState

_log = logging.getLogger(__name__)

# The packages each tracker needs, and the extra that installs them.
EXTRAS = {
    "mlflow": ("mlflow", "mlflow"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
}


def missing_extra(tracking: Tracking) -> tuple[str, str] | None:
    """(tracker, what to install) for the first tracker whose package is missing, or None."""
    for name, (module, extra) in EXTRAS.items():
        if getattr(tracking, name) is not None and importlib.util.find_spec(module) is None:
            return name, (
                f"needs the {module} package, which is not installed; "
                f"pip install 'hpsearch[{extra}]'"
            )
    return None


class Trackers:
    """Every tracker of the study file, told together; one that fails is left out for the
    rest of the trial (see the module docstring)."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self._trackers = list(trackers)
        self._failed: dict[int, set[int]] = {}  # trial number -> trackers that failed in it

    def __bool__(self) -> bool:
        return bool(self._trackers)

    def start(self, trial: TrialInfo) -> None:
        self._failed[trial.number] = set()
        self._each(trial, lambda t: t.start(trial))

    def step(self, trial: TrialInfo, metrics: Mapping[str, float], step: int) -> None:
        self._each(trial, lambda t: t.step(trial, metrics, step))

    def finish(
        self,
        trial: TrialInfo,
        state: TrialState,
        values: Sequence[float] | None,
        checkpoint: str | None,
    ) -> None:
        self._each(trial, lambda t: t.finish(trial, state, values, checkpoint))
        self._failed.pop(trial.number, None)

    def _each(self, trial: TrialInfo, call: Callable[[Tracker], None]) -> None:
        failed = self._failed.setdefault(trial.number, set())
        for i, tracker in enumerate(self._trackers):
            if i in failed:
                continue
            try:
                call(tracker)
            except Exception as e:  # a tracker never fails the trial
                failed.add(i)
                _log.warning(
                    "trial %d is not sent to %s any more: %s: %s",
                    trial.number, type(tracker).__name__, type(e).__name__, str(e)[:300],
                )  # fmt: skip


def open_trackers(tracking: Tracking, base: Path) -> Trackers:
    """The trackers `tracking:` names; relative folders are relative to `base`, the study
    file's folder.

    Raises:
        HpsearchError: a tracker's package is missing (one line naming the extra).
    """
    problem = missing_extra(tracking)
    if problem is not None:
        raise HpsearchError(f"tracking.{problem[0]}: {problem[1]}")
    trackers: list[Tracker] = []
    if tracking.mlflow is not None:
        from hpsearch.tracking.mlflow_runs import MlflowTracker

        trackers.append(MlflowTracker(tracking.mlflow, base))
    if tracking.tensorboard is not None:
        from hpsearch.tracking.tensorboard_events import TensorBoardTracker

        trackers.append(TensorBoardTracker(tracking.tensorboard, base))
    if tracking.wandb is not None:
        from hpsearch.tracking.wandb_runs import WandbTracker

        trackers.append(WandbTracker(tracking.wandb, base))
    return Trackers(trackers)
