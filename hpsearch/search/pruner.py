"""`AutoPruner`: stop a trial only when its curve could no longer beat the best finished trial.

Why not the median rule: on learning curves the eventual winners often start slowly, and a
median pruner with no warm-up keeps the fast starters and kills them (docs/search.md: the same
sampler does better with pruning off). This pruner asks a different question at each report
after a warm-up: "if this trial improved from here as much as the finished trials did from the
same point, optimistically, would it beat the incumbent?" If not, it stops.

- **Progress, not steps.** A trial at step s of its planned T steps is at progress s/T, and is
  compared with each finished trial at the same share of *its own* length. With `epochs`
  searched, a 30-epoch cosine run at epoch 3 is at 10% of its schedule and a 4-epoch run at
  epoch 3 at 75%; comparing them at step 3 would penalise the long runs. T is the trial's
  `hpsearch:total_steps` or `epochs` user attribute (the trainer records `epochs` before it
  trains), else its `epochs` parameter, else what finished trials ran (the median last step).
- **Optimistic continuation.** The gain a finished trial made from progress p to its end
  (its final value minus its best so far at p) is measured for every finished trial; the
  trial is stopped when its best so far plus a high quantile of those gains is still below the
  best finished value. A slow starter whose peers gained a lot from this point is kept.
- **Warm-up relative to the trial's length** (no decision before `_WARMUP` of its steps) and no
  decision before `_MIN_FINISHED` trials finished.
- **Cheap on a database.** Finished trials' curves are cached; the study's finished trials are
  read at most once per trial that reports (when a new trial number is seen) and otherwise at
  most every `_REFRESH_SECONDS`, never at every report (Optuna's median pruner reads them all
  at every report: quadratic in the study's size through a database).
"""

from __future__ import annotations

import math
import time

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

# Measured on the LCBench tune tasks (benchmarks/search_quality.py); docs/search.md has the
# figures. No decision before this share of the trial's planned steps.
_WARMUP = 0.3
# Trials that must have finished before any decision: fewer curves give no sense of the gains.
_MIN_FINISHED = 5
# The quantile of the finished trials' remaining gains taken as the trial's optimistic gain.
_QUANTILE = 0.9
# A trial that runs long in a study with many workers sees others finish: read again then.
_REFRESH_SECONDS = 30.0
# Progress is tabulated on this grid (0, 1/_GRID, ..., 1) for a vectorised look-up.
_GRID = 100
TOTAL_STEPS_ATTR = "hpsearch:total_steps"


def planned_steps(trial: FrozenTrial) -> int | None:
    """The steps this trial plans to report, if it says: its attribute, else `epochs`."""
    for key in (TOTAL_STEPS_ATTR, "epochs"):
        value = trial.user_attrs.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
            return int(value)
    value = trial.params.get("epochs")
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
        return int(value)
    return None


class _Finished:
    """The finished trials' curves as (best so far at each grid progress, final value)."""

    def __init__(self) -> None:
        self.best = np.empty((0, _GRID + 1))  # row: a trial's running best on the grid
        self.start = np.empty(0, dtype=np.int64)  # first grid index the trial has a value at
        self.final = np.empty(0)
        self.lengths: list[int] = []
        self._numbers: set[int] = set()
        self._trial = -1
        self._read_at = -math.inf

    def refresh(self, study: optuna.Study, trial: FrozenTrial, sign: float) -> None:
        now = time.monotonic()
        if trial.number == self._trial and now - self._read_at < _REFRESH_SECONDS:
            return
        self._trial, self._read_at = trial.number, now
        rows, starts, finals = [], [], []
        for done in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if done.number in self._numbers or done.value is None:
                continue
            self._numbers.add(done.number)
            curve = _tabulate(done, sign)
            if curve is None:
                continue
            row, start, length = curve
            rows.append(row)
            starts.append(start)
            finals.append(sign * done.value)
            self.lengths.append(length)
        if rows:
            self.best = np.vstack([self.best, *rows])
            self.start = np.concatenate([self.start, starts])
            self.final = np.concatenate([self.final, finals])


def _tabulate(trial: FrozenTrial, sign: float) -> tuple[np.ndarray, int, int] | None:
    """A finished trial's running best (maximise orientation) at each grid progress."""
    points = sorted(
        (s, sign * v) for s, v in trial.intermediate_values.items() if not math.isnan(v)
    )
    if not points:
        return None
    length = planned_steps(trial) or points[-1][0]
    steps = np.array([s for s, _ in points], dtype=float) / max(length, 1)
    running = np.maximum.accumulate(np.array([v for _, v in points]))
    grid = np.linspace(0.0, 1.0, _GRID + 1)
    # The best so far at progress p is the running best of the last report at or before p.
    index = np.searchsorted(steps, grid, side="right") - 1
    row = running[np.clip(index, 0, None)]
    start = int(np.searchsorted(grid, steps[0]))
    return row, start, points[-1][0]


class AutoPruner(BasePruner):
    """hpsearch's default pruner: a learning-curve rule that spares slow starters."""

    def __init__(self) -> None:
        self._finished = _Finished()
        self._sign: float | None = None

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        if self._sign is None:
            # Directions never change: read once, not at every report.
            directions = study.directions
            if len(directions) > 1:
                self._sign = math.nan  # Optuna prunes single-objective studies only
            else:
                self._sign = 1.0 if directions[0] == StudyDirection.MAXIMIZE else -1.0
        if math.isnan(self._sign):
            return False
        values = [self._sign * v for v in trial.intermediate_values.values()]
        if values and all(math.isnan(v) for v in values):
            return True  # diverged: nothing it reports can be compared
        total = planned_steps(trial)
        if total is not None and step / total < _WARMUP:
            return False  # decided before any read, so early reports cost nothing
        finished = self._finished
        finished.refresh(study, trial, self._sign)
        if len(finished.final) < _MIN_FINISHED:
            return False
        if total is None:
            total = int(np.median(finished.lengths))
        progress = step / total
        if progress < _WARMUP or progress >= 1.0:
            return False
        index = int(progress * _GRID)  # at or before the trial's progress: not optimistic
        covered = finished.start <= index
        if covered.sum() < _MIN_FINISHED:
            return False
        gains = finished.final[covered] - finished.best[covered, index]
        current = max(v for v in values if not math.isnan(v))
        optimistic = current + float(np.quantile(gains, _QUANTILE))
        return optimistic < float(finished.final.max())
