"""The in-memory study `AutoSampler`'s GP samples from: the real study as GP should see it.

Optuna's GP learns from COMPLETE trials only, and models a fixed space. The mirror holds (public
API only: `add_trial`, `ask`, `tell`):

- completed trials as they are, pruned trials as COMPLETE with the value their curve would most
  likely have reached (`Curves.estimate`);
- other workers' running trials as COMPLETE with a fantasised value (a "believer"): what their
  curve so far would most likely reach, the same estimate as for a pruned trial, or, before
  they report, the median of the finished ones. GP's expected improvement is then low next to
  them, so workers that ask at nearly the same time spread out. Handing them to Optuna's GP as
  RUNNING would do the same through its batch acquisition (qLogEI), but that costs about ten
  times as much CPU per proposal with 7 running trials, and it ignores their reported values.
  The fantasies change at every report, so with running trials the mirror is rebuilt at each
  proposal (a few hundred in-memory trials at most: cheap beside the GP fit);
- every parameter seen in any trial (the union of the spaces, not their intersection): where a
  conditional parameter is inactive (`momentum` of an `adam` trial) it is filled in with its
  distribution's lowest value (first choice), so one GP models the whole conditional space; the
  parent choice, always present, tells the kernel which trials the value means something for.
  When a new parameter shows, the mirror is rebuilt over the wider space.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import GPSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpsearch.search.curves import Curves

# The gain quantile that turns a pruned trial's curve into the value GP learns.
PRUNED_QUANTILE = 0.5


def _inactive(distribution: BaseDistribution) -> Any:
    """The value an absent parameter is given: its lowest value, its first choice."""
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[0]
    return distribution.to_external_repr(getattr(distribution, "low", 0.0))


class Mirror:
    """The real study's trials as GP should see them (see the module's docstring)."""

    def __init__(self, gp: GPSampler, directions: Sequence[StudyDirection]) -> None:
        self._gp = gp
        self._directions = list(directions)
        self.sign = 1.0 if directions[0] == StudyDirection.MAXIMIZE else -1.0
        self.curves = Curves()
        self.space: dict[str, BaseDistribution] = {}  # every parameter seen, first distribution
        self._done: dict[int, tuple[FrozenTrial, list[float]]] = {}  # real number -> as COMPLETE
        self._fantasies = False  # whether the mirror holds running trials' fantasised values
        self.study = self._new_study()

    def _new_study(self) -> optuna.Study:
        return optuna.create_study(directions=self._directions, sampler=self._gp)

    def sync(self, trials: Sequence[FrozenTrial], current: int) -> None:
        """Bring the mirror up to the real study's `trials`, all but the `current` one."""
        if len(self._directions) == 1:
            self.curves.add([t for t in trials if t.state == TrialState.COMPLETE], self.sign)
        running: dict[int, FrozenTrial] = {}
        fresh: list[tuple[FrozenTrial, list[float]]] = []
        for trial in trials:
            if trial.number == current or trial.number in self._done:
                continue
            if trial.state == TrialState.RUNNING:
                if trial.params:
                    running[trial.number] = trial
            elif (values := self._values(trial)) is not None:
                fresh.append((trial, values))
        wider = {
            name: d
            for trial in [*running.values(), *(t for t, _ in fresh)]
            for name, d in trial.distributions.items()
            if name not in self.space
        }
        self.space.update(wider)
        self._done.update((t.number, (t, values)) for t, values in fresh)
        added: Iterable[tuple[FrozenTrial, list[float]]] = fresh
        if wider or running or self._fantasies:  # rebuilt: fantasies are never stale
            self.study, added = self._new_study(), self._done.values()
        for trial, values in added:
            self._add(trial, TrialState.COMPLETE, values)
        self._fantasies = False
        for trial in running.values():
            if (believed := self._fantasy(trial)) is not None:
                self._add(trial, TrialState.COMPLETE, believed)
                self._fantasies = True

    def _fantasy(self, trial: FrozenTrial) -> list[float] | None:
        """A running trial's believed values: its curve's likely end, else the finished median
        (None before any trial finished)."""
        if len(self._directions) == 1:
            value = self.curves.estimate(trial, self.sign, PRUNED_QUANTILE)
            if value is not None:
                return [self.sign * value]
        done = [values for _, values in self._done.values()]
        if not done:
            return None
        return [float(np.median(column)) for column in zip(*done, strict=True)]

    def _values(self, trial: FrozenTrial) -> list[float] | None:
        if trial.state == TrialState.COMPLETE and trial.values is not None:
            return list(trial.values)
        if trial.state == TrialState.PRUNED and len(self._directions) == 1:
            value = self.curves.estimate(trial, self.sign, PRUNED_QUANTILE)
            return None if value is None else [self.sign * value]
        return None

    def _add(self, trial: FrozenTrial, state: TrialState, values: list[float] | None) -> int:
        params = {n: trial.params.get(n, _inactive(d)) for n, d in self.space.items()}
        distributions = {n: trial.distributions.get(n, d) for n, d in self.space.items()}
        self.study.add_trial(
            create_trial(state=state, params=params, distributions=distributions, values=values)
        )
        return len(self.study.get_trials(deepcopy=False)) - 1

    def completed(self) -> int:
        """How many trials GP learns from."""
        return len(self._done)

    def sample(self, space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """GP's proposal over `space` (a proposal, not a trial: the mirror's trial is failed),
        or {} when it is a configuration the study already ran.

        GP's acquisition is maximised over a box, and on noisy real curves (pruned trials'
        estimated values disagreeing with each other) its noise term keeps the expected
        improvement at a corner positive: on a real CNN study it proposed the same corner
        (lowest lr, smallest batch, lowest weight decay) five times, each pruned again
        (benchmarks/cnn_study.py). A configuration already run teaches nothing new: the caller
        draws that trial at random instead.
        """
        asked = self.study.ask(fixed_distributions=space)
        params = dict(asked.params)
        self.study.tell(asked, state=TrialState.FAIL)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if all(trial.params.get(name) == value for name, value in params.items()):
                return {}
        return params
