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

from hpsearch.search.curves import Curves, best_so_far, planned_steps

# Measured on the LCBench tune tasks (benchmarks/search_quality.py); docs/search.md has the
# figures. No decision before this share of the trial's planned steps.
_WARMUP = 0.2
# Trials that must have finished before any decision: fewer curves give no sense of the gains;
# 3 rather than 5 (measured with the 5 start-up trials, benchmarks/search_quality.py).
_MIN_FINISHED = 3
# The quantile of the similar finished trials' remaining gains taken as the trial's optimistic
# gain: 1.0, the most any of them gained.
_QUANTILE = 1.0
# A trial that runs long in a study with many workers sees others finish: read again then.
_REFRESH_SECONDS = 30.0


class AutoPruner(BasePruner):
    """hpsearch's default pruner: a learning-curve rule that spares slow starters."""

    def __init__(self) -> None:
        self._curves = Curves()
        self._sign: float | None = None
        self._read_for = -1  # the trial number the finished trials were last read for
        self._read_at = -math.inf

    def _refresh(self, study: optuna.Study, trial: FrozenTrial, sign: float) -> None:
        now = time.monotonic()
        if trial.number == self._read_for and now - self._read_at < _REFRESH_SECONDS:
            return
        self._read_for, self._read_at = trial.number, now
        self._curves.add(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), sign)

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
        sign = self._sign
        if math.isnan(sign):
            return False
        current = best_so_far(trial, sign)
        if current is None:
            return bool(trial.intermediate_values)  # only NaN so far: diverged
        total = planned_steps(trial)
        if total is not None and step / total < _WARMUP:
            return False  # decided before any read, so early reports cost nothing
        self._refresh(study, trial, sign)
        curves = self._curves
        progress = curves.progress(trial)
        if len(curves) < _MIN_FINISHED or progress is None:
            return False
        if progress < _WARMUP or progress >= 1.0:
            return False
        gains = curves.gains(progress, current)
        if len(gains) < _MIN_FINISHED:
            return False
        optimistic = current + float(np.quantile(gains, _QUANTILE))
        return optimistic < float(curves.final.max())
