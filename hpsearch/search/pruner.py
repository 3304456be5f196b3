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
- **Warm-up relative to the trial's length** (no decision before `_WARMUP` of its steps), and
  never before its third report.
- **Before `_MIN_FINISHED` trials finished** there are no finished curves to learn gains from;
  a fleet's first round would run unpruned (8 workers, 8 full trainings). Then the trial is
  compared, as each fifth of its epochs is crossed, with every other trial that reached the
  same share (running ones included, what other workers reported so far): it is stopped if it
  trails at least half of them there (successive halving's rule, only for this first round).
  One worker never has such peers before 3 trials finished: it is not affected.
- **Cheap on a database, and tied to study events, not the clock.** Finished trials' curves are
  cached; the study is read when a trial crosses a fifth of its planned steps (at most 5 reads a
  trial), never at every report (Optuna's median pruner reads all trials at every report:
  quadratic in the study's size through a database). Being tied to the trial's progress, not
  to a clock, the decisions are the same in a simulation of the fleet as on real workers.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.search.curves import Curves, best_so_far, best_until, planned_steps

# Measured on the LCBench tune tasks (benchmarks/search_quality.py); docs/search.md has the
# figures. No decision before this share of the trial's planned steps.
_WARMUP = 0.2
# Trials that must have finished before any decision: fewer curves give no sense of the gains;
# 3 rather than 5 (measured with the 5 start-up trials, benchmarks/search_quality.py).
_MIN_FINISHED = 3
# The quantile of the similar finished trials' remaining gains taken as the trial's optimistic
# gain: 1.0, the most any of them gained.
_QUANTILE = 1.0
# The study is read again as a trial crosses each of these shares of its steps (a rung):
# a trial that runs long in a study with many workers sees others finish.
_RUNG = 0.2
# Before _MIN_FINISHED trials finished: a trial is stopped at a rung when at least
# _EARLY_PEERS other trials reached it and it trails the _EARLY_QUANTILE of their values there.
_EARLY_PEERS = 3
_EARLY_QUANTILE = 0.5
# No decision before a trial has reported this many times, whatever its length: on a short
# trial (8 epochs) a fifth of the epochs is one or two reports, and a real CNN's first epochs
# under a cosine schedule say little about its end (benchmarks/cnn_study.py). LCBench's
# 52-epoch curves reach the warm-up share at epoch 11: this changes nothing there.
_MIN_REPORTS = 3
_PEERS = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)


class AutoPruner(BasePruner):
    """hpsearch's default pruner: a learning-curve rule that spares slow starters."""

    def __init__(self) -> None:
        self._curves = Curves()
        self._sign: float | None = None
        self._read_at = (-1, -1)  # (trial number, rung) the study was last read at

    def _refresh(self, study: optuna.Study, sign: float, at: tuple[int, int]) -> None:
        self._read_at = at
        self._curves.add(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), sign)

    def _trails_peers(
        self, study: optuna.Study, trial: FrozenTrial, sign: float, progress: float
    ) -> bool:
        """Whether the trial trails the others that reached its rung (the first round's rule).

        A peer counts once it reported up to half a rung short of the trial's progress (workers
        do not report at the same instants); its value is its best up to that progress, so one
        a little behind is, if anything, judged low: the rule leans towards keeping the trial.
        """
        current = best_so_far(trial, sign)
        peers = []
        for other in study.get_trials(deepcopy=False, states=_PEERS):
            if other.number != trial.number:
                value = best_until(other, sign, progress, progress - _RUNG / 2)
                if value is not None:
                    peers.append(value)
        if current is None or len(peers) < _EARLY_PEERS:
            return False
        return current < float(np.quantile(peers, _EARLY_QUANTILE))

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        sign = self._study_sign(study)
        if math.isnan(sign):
            return False
        current = best_so_far(trial, sign)
        if current is None:
            return bool(trial.intermediate_values)  # only NaN so far: diverged
        total = planned_steps(trial)
        if len(trial.intermediate_values) < _MIN_REPORTS:
            return False
        if total is not None and step / total < _WARMUP:
            return False  # decided before any read, so early reports cost nothing
        if total is None and self._read_at[0] != trial.number:
            self._refresh(study, sign, (trial.number, -1))  # its length: finished trials'
        progress = self._curves.progress(trial)
        if progress is None or progress < _WARMUP or progress >= 1.0:
            return False
        return self._behind(study, trial, sign, current, progress)

    def _study_sign(self, study: optuna.Study) -> float:
        """1 to maximize, -1 to minimize, NaN for several objectives (never pruned)."""
        if self._sign is None:
            # Directions never change: read once, not at every report.
            directions = study.directions
            if len(directions) > 1:
                self._sign = math.nan  # Optuna prunes single-objective studies only
            else:
                self._sign = 1.0 if directions[0] == StudyDirection.MAXIMIZE else -1.0
        return self._sign

    def _behind(
        self, study: optuna.Study, trial: FrozenTrial, sign: float, current: float, progress: float
    ) -> bool:
        """Whether the trial, past its warm-up, cannot catch up with the best finished trial.

        The finished curves are read again once per rung the trial reaches; until enough trials
        have finished, it is compared with its peers at that rung instead (`_trails_peers`).
        """
        curves = self._curves
        rung = int(progress / _RUNG)
        if (trial.number, rung) != self._read_at:
            self._refresh(study, sign, (trial.number, rung))
            if len(curves) < _MIN_FINISHED:
                return self._trails_peers(study, trial, sign, progress)
        if len(curves) < _MIN_FINISHED:
            return False
        gains = curves.gains(progress, current)
        if len(gains) < _MIN_FINISHED:
            return False
        optimistic = current + float(np.quantile(gains, _QUANTILE))
        return optimistic < float(curves.final.max())
