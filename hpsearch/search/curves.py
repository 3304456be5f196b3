"""Learning curves on a common axis: progress through each trial's own planned steps.

A trial at step s of its planned T steps is at progress s/T. Finished trials' curves are kept
as their running best (in "maximise" orientation: values times `sign`) on a grid of progress
0, 1/_GRID, ..., 1, so that "what did finished trials gain from this point to their end" is one
vectorised look-up, whatever each trial's length. Shared by the pruner (is a trial hopeless?)
and the sampler (what would a pruned trial have reached, for the model).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from optuna.trial import FrozenTrial

_GRID = 100
_GRID_POINTS = np.linspace(0.0, 1.0, _GRID + 1)
# How many finished curves a trial is compared with: the nearest share at the same progress.
_NEIGHBOURS = 0.25
_MIN_NEIGHBOURS = 5
# A stopped trial's estimate only trusts a neighbour whose best so far at the same progress is
# within this many spreads (standard deviations) of the finished curves there of its own: a
# curve far below all of them (a diverged one at chance) has no neighbour like it, and the
# gains of the far ones, which were learning, said it would reach their level. Not the
# interquartile range: finished trials are mostly the pruner's survivors, bunched within the
# validation noise, and slow but learning trials just below them lost all their gain
# (benchmarks/cnn_study.py; offline, on LCBench curves cut short, the estimate's error was
# lowest with the standard deviation).
_NEAR = 1.0
TOTAL_STEPS_ATTR = "hpsearch:total_steps"


def _positive(value: object) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
        return int(value)
    return None


def planned_steps(trial: FrozenTrial) -> int | None:
    """The steps this trial plans to report, if it says.

    Its `hpsearch:total_steps` or `epochs` user attribute (the built-in trainer records
    `epochs` before it trains), else its `epochs` parameter.
    """
    # `epochs` is `storage.attrs.EPOCHS_ATTR`, written out: `search` imports nothing of hpsearch.
    for key in (TOTAL_STEPS_ATTR, "epochs"):
        if (steps := _positive(trial.user_attrs.get(key))) is not None:
            return steps
    return _positive(trial.params.get("epochs"))


def _points(trial: FrozenTrial, sign: float) -> list[tuple[int, float]]:
    return sorted((s, sign * v) for s, v in trial.intermediate_values.items() if not math.isnan(v))


def best_so_far(trial: FrozenTrial, sign: float) -> float | None:
    """The trial's best reported value (maximise orientation), None if it reported none."""
    points = _points(trial, sign)
    return max(v for _, v in points) if points else None


def best_until(trial: FrozenTrial, sign: float, progress: float, reached: float) -> float | None:
    """The trial's best value up to `progress` of its planned steps (maximise orientation),
    None unless it knows its length and has reported up to at least `reached`."""
    total = planned_steps(trial)
    points = _points(trial, sign)
    if total is None or not points or points[-1][0] / total < reached:
        return None
    values = [v for s, v in points if s / total <= progress]
    return max(values) if values else None


class Curves:
    """Finished (COMPLETE) trials' curves, added incrementally: each trial is read once."""

    def __init__(self) -> None:
        self.best = np.empty((0, _GRID + 1))  # a row per trial: running best on the grid
        self.start = np.empty(0, dtype=np.int64)  # first grid index with a value
        self.final = np.empty(0)  # the trial's value (maximise orientation)
        self.lengths: list[int] = []  # last step reported
        self._numbers: set[int] = set()

    def __len__(self) -> int:
        return len(self.final)

    def add(self, trials: Iterable[FrozenTrial], sign: float) -> None:
        rows, starts, finals = [], [], []
        for trial in trials:
            if trial.number in self._numbers or trial.value is None:
                continue
            self._numbers.add(trial.number)
            points = _points(trial, sign)
            if not points:
                continue
            length = planned_steps(trial) or points[-1][0]
            steps = np.array([s for s, _ in points], dtype=float) / max(length, 1)
            running = np.maximum.accumulate(np.array([v for _, v in points]))
            # The best so far at progress p: the running best of the last report at or before p.
            index = np.searchsorted(steps, _GRID_POINTS, side="right") - 1
            rows.append(running[np.clip(index, 0, None)])
            starts.append(int(np.searchsorted(_GRID_POINTS, steps[0])))
            finals.append(sign * trial.value)
            self.lengths.append(points[-1][0])
        if rows:
            self.best = np.vstack([self.best, *rows])
            self.start = np.concatenate([self.start, starts])
            self.final = np.concatenate([self.final, finals])

    def progress(self, trial: FrozenTrial) -> float | None:
        """How far through its planned steps the trial is (finished trials' median length if
        it does not say); None before it reports or before any trial finished."""
        step = trial.last_step
        total = planned_steps(trial)
        if total is None and self.lengths:
            total = int(np.median(self.lengths))
        if step is None or total is None:
            return None
        return step / total

    def gains(self, progress: float, near: float | None = None) -> np.ndarray:
        """What finished trials that had reported by `progress` gained from there to their end.

        With `near`, only the `_NEIGHBOURS` share (at least `_MIN_NEIGHBOURS`) whose best so far
        at `progress` was closest to `near`: a slow starter's prospects are those of the
        finished trials that were as slow, not of the fast starters that plateaued early.
        Looked up at the grid point at or before `progress`: a finished trial had a little
        further to go from there, so the gains lean optimistic, the safe side for pruning.
        """
        return self._neighbours(min(int(progress * _GRID), _GRID), near)[0]

    def _neighbours(self, index: int, near: float | None) -> tuple[np.ndarray, np.ndarray]:
        """The gains from grid point `index` (of the neighbours of `near`, if given), and
        whether each is of a curve within `_NEAR` spreads of `near` there."""
        covered = self.start <= index
        best = self.best[covered, index]
        gains = self.final[covered] - best
        if near is None:
            return gains, np.ones(len(gains), dtype=bool)
        k = max(_MIN_NEIGHBOURS, int(len(gains) * _NEIGHBOURS))
        distance = np.abs(best - near)
        order = np.argsort(distance, kind="stable")[:k]
        # The spread of the finished curves where they are, in the metric's own units: the
        # same rule on accuracies, losses or anything else, minimised or maximised.
        spread = float(np.std(best)) if len(best) else 0.0
        return gains[order], distance[order] <= _NEAR * spread

    def estimate(self, trial: FrozenTrial, sign: float, quantile: float) -> float | None:
        """A stopped trial's final value had it gone on (maximise orientation): its best so far
        plus the `quantile` of the gains finished trials like it made from the same progress.

        Only the neighbours within `_NEAR` spreads of it count: with no finished curve near
        it, the trial is believed to end at its own best so far, not at the level of curves
        that were far above it and learning. Looked up at the grid point at or after
        the trial's progress, unlike the pruner's `gains`: at the one before, an 8-epoch curve
        at epoch 3 (0.375) would be set beside finished curves at their epoch 2 (0.37), their
        gains counting one more epoch than it has left, and its own value looking far above
        theirs.
        """
        current = best_so_far(trial, sign)
        progress = self.progress(trial)
        if current is None or progress is None:
            return current
        # Less a hair: a progress on the grid (0.5) is looked up there, not a point after.
        index = min(math.ceil(progress * _GRID - 1e-6), _GRID)
        gains, near = self._neighbours(index, current)
        if len(gains) < 3 or not near.any():
            return current
        return current + max(float(np.quantile(gains[near], quantile)), 0.0)
