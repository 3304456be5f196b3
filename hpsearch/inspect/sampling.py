"""Which trials the report's plots draw when a study is too big to draw whole, and the note.

Drawing 20,000 trials costs minutes of CPU and hundreds of MB, makes a report of tens of MB,
and 20,000 learning curves cannot be told apart on a screen anyway. Above `PLOT_TRIALS` the
history, parallel-coordinate and slice plots draw a sample: every trial that improved the best
value (so the history's best-value line is exact) or, with several objectives, the Pareto front;
then the best trials; then a seeded random draw of the rest (the same study gives the same
report). At most `CURVES` learning curves are drawn: the best trials', then random ones. The
report says so above the plots; its status, best parameters and advice count every trial.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.inspect.source import curve, pareto_front

PLOT_TRIALS = 1000  # trials drawn in the history, parallel-coordinate and slice plots
CURVES = 200  # learning curves drawn: about 3,000 points at 15 epochs each
_BEST_SHARE = 0.1  # of the plotted trials, this share are the best ones


@dataclass(frozen=True)
class Sample:
    """The trials the plots draw, in trial-number order."""

    trials: list[FrozenTrial]
    curves: list[FrozenTrial]  # those whose learning curves are drawn
    total: int  # trials in the study
    with_curves: int  # trials in the study with a learning curve

    def note(self) -> str | None:
        """What the plots leave out, in words; None when they draw everything."""
        if len(self.trials) == self.total and len(self.curves) == self.with_curves:
            return None
        return (
            f"This study has {self.total:,} trials: the plots below draw {len(self.trials):,} "
            "of them (every trial that improved the best value, the best ones and a random "
            f"draw of the rest) and {len(self.curves):,} of its {self.with_curves:,} learning "
            "curves, so that the report stays quick to write and to open. The status, best "
            "parameters and advice above count every trial."
        )


def sample(
    trials: list[FrozenTrial],
    directions: list[StudyDirection],
    metric: str,
    *,
    limit: int = PLOT_TRIALS,
    curves: int = CURVES,
) -> Sample:
    """The trials to draw (`trials` itself when there are at most `limit`)."""
    rng = random.Random(0)
    ranked = _ranked(trials, directions)
    drawn = trials
    if len(trials) > limit:
        keep = {t.number: t for t in _landmarks(trials, directions)}
        for t in ranked[: int(limit * _BEST_SHARE)]:
            keep.setdefault(t.number, t)
        rest = [t for t in trials if t.number not in keep]
        room = max(0, limit - len(keep))
        keep.update((t.number, t) for t in rng.sample(rest, min(room, len(rest))))
        drawn = sorted(keep.values(), key=lambda t: t.number)
    has_curve = [t for t in drawn if t.intermediate_values or curve(t, metric)]
    with_curves = sum(1 for t in trials if t.intermediate_values or curve(t, metric))
    shown = has_curve
    if len(has_curve) > curves:
        numbers = {t.number for t in has_curve}
        best = [t for t in ranked if t.number in numbers][: max(1, curves // 4)]
        taken = {t.number for t in best}
        others = [t for t in has_curve if t.number not in taken]
        chosen = best + rng.sample(others, curves - len(best))
        shown = sorted(chosen, key=lambda t: t.number)
    return Sample(drawn, shown, len(trials), with_curves)


def _ranked(trials: list[FrozenTrial], directions: list[StudyDirection]) -> list[FrozenTrial]:
    """Completed trials, best first by the first objective."""
    sign = -1.0 if directions[0] == StudyDirection.MAXIMIZE else 1.0
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    return sorted(complete, key=lambda t: (sign * t.values[0], t.number))


def _landmarks(trials: list[FrozenTrial], directions: list[StudyDirection]) -> list[FrozenTrial]:
    """The trials a plot must not lose: those that improved the best value, or the front."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    if len(directions) > 1:
        front = set(pareto_front([(t.number, list(t.values)) for t in complete], directions))
        return [t for t in complete if t.number in front]
    sign = -1.0 if directions[0] == StudyDirection.MAXIMIZE else 1.0
    records: list[FrozenTrial] = []
    for t in sorted(complete, key=lambda t: t.number):
        if not records or sign * t.values[0] < sign * records[-1].values[0]:
            records.append(t)
    return records
