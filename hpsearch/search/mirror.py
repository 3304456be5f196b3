"""The in-memory study `AutoSampler`'s GP samples from: the real study as GP should see it.

Optuna's GP learns from COMPLETE trials only, and models a fixed space. The mirror holds (public
API only: `add_trial`, `ask`, `tell`):

- completed trials as they are, pruned trials as COMPLETE with the value their curve would most
  likely have reached (`Curves.estimate`), other workers' running trials as RUNNING (Optuna's
  GP then fantasises their outcomes, so workers that ask at nearly the same time spread out);
- every parameter seen in any trial (the union of the spaces, not their intersection): where a
  conditional parameter is inactive (`momentum` of an `adam` trial) it is filled in with its
  distribution's lowest value (first choice), so one GP models the whole conditional space; the
  parent choice, always present, tells the kernel which trials the value means something for.
  When a new parameter shows, the mirror is rebuilt over the wider space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
        self._running: dict[int, int] = {}  # other workers' trials: real number -> mirror's
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
        if wider:  # a new parameter: every trial is added again over the wider space
            self.space.update(wider)
            self.study, self._running = self._new_study(), {}
            for trial, values in self._done.values():
                self._add(trial, TrialState.COMPLETE, values)
        for number in set(self._running) - set(running):  # it finished: its copy goes
            self.study.tell(self._running.pop(number), state=TrialState.FAIL)
        for trial, values in fresh:
            self._done[trial.number] = (trial, values)
            self._add(trial, TrialState.COMPLETE, values)
        for number, trial in running.items():
            if number not in self._running:
                self._running[number] = self._add(trial, TrialState.RUNNING, None)

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
        """GP's proposal over `space` (a proposal, not a trial: the mirror's trial is failed)."""
        asked = self.study.ask(fixed_distributions=space)
        params = dict(asked.params)
        self.study.tell(asked, state=TrialState.FAIL)
        return params
