"""`AutoSampler`: Optuna's GP sampler where it is strongest, multivariate TPE where it is not.

On LCBench at 20-50 full trainings GP has several times lower regret than TPE (see
docs/search.md), but Optuna 5's `GPSampler` samples a conditional (dynamic) space parameter by
parameter at random, and its cost grows with the cube of the number of trials. So each trial is
handed to one of two samplers, decided when it starts:

- GP while the study has fewer than `_GP_MAX_TRIALS` finished trials, its space has at most
  `_GP_MAX_DIMS` parameters and every finished trial has the same parameters;
- TPE (multivariate, `group=True` so conditional parameters are modelled jointly,
  `constant_liar` so parallel workers spread out) otherwise. Once a conditional space is seen
  the choice sticks: the GP model would no longer cover the space.

Optuna's GP learns from COMPLETE trials only, so with a pruner it would never hear of the
configurations it was told were bad, and would propose them again. GP therefore works on a
private in-memory mirror of the study (public API only: `add_trial`, `ask`, `tell`): completed
trials as they are, pruned trials as COMPLETE with the value their curve would most likely have
reached (`Curves.estimate`: their best so far plus the median gain finished trials made from
the same progress), and other workers' running trials as RUNNING, so that GP's acquisition
spreads parallel workers out as it does in a real study.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, GPSampler, RandomSampler, TPESampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpsearch.search.curves import Curves

# GP fits cost O(n^3) and its advantage is on small budgets (the targets are at 8-20 full
# trainings, about 40-80 trials with pruning); past this TPE is far cheaper per trial
# (Optuna's GP takes ~0.2 s a trial at 100 trials, ~1 s at 300).
_GP_MAX_TRIALS = 120
# GP's kernel lengthscales are fitted per dimension; with few trials and many dimensions the
# fit is poor and TPE, which models marginals, does better.
_GP_MAX_DIMS = 16
# Random trials before the models take over: 5 rather than Optuna's 10 needed 2-4 fewer
# trainings to reach random search's 100-training result on all 8 LCBench dev tasks.
_N_STARTUP = 5
# The gain quantile that turns a pruned trial's curve into the value GP learns.
_PRUNED_QUANTILE = 0.5
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class _Mirror:
    """The in-memory study GP samples from: the real study's trials as GP should see them."""

    def __init__(self, gp: GPSampler, directions: Sequence[StudyDirection]) -> None:
        self.study = optuna.create_study(directions=list(directions), sampler=gp)
        self.sign = 1.0 if directions[0] == StudyDirection.MAXIMIZE else -1.0
        self.curves = Curves()
        self._added: set[int] = set()
        self._running: dict[int, int] = {}  # real trial number -> mirror trial number

    def sync(self, trials: Sequence[FrozenTrial], current: int) -> None:
        completed = [t for t in trials if t.state == TrialState.COMPLETE]
        if len(self.study.directions) == 1:
            self.curves.add(completed, self.sign)
        for trial in trials:
            if trial.number == current or trial.number in self._added:
                continue
            mirrored = self._running.pop(trial.number, None)
            if trial.state == TrialState.RUNNING:
                if mirrored is None and trial.params:
                    self._running[trial.number] = self._add(trial, TrialState.RUNNING, None)
                elif mirrored is not None:
                    self._running[trial.number] = mirrored
                continue
            if mirrored is not None:  # it finished: the mirror's running copy goes
                self.study.tell(mirrored, state=TrialState.FAIL)
            self._added.add(trial.number)
            if trial.state == TrialState.COMPLETE and trial.values is not None:
                self._add(trial, TrialState.COMPLETE, list(trial.values))
            elif trial.state == TrialState.PRUNED and len(self.study.directions) == 1:
                value = self.curves.estimate(trial, self.sign, _PRUNED_QUANTILE)
                if value is not None:
                    self._add(trial, TrialState.COMPLETE, [self.sign * value])

    def _add(self, trial: FrozenTrial, state: TrialState, values: list[float] | None) -> int:
        self.study.add_trial(
            create_trial(
                state=state, params=trial.params, distributions=trial.distributions, values=values
            )
        )
        return len(self.study.trials) - 1

    def sample(self, space: dict[str, BaseDistribution]) -> dict[str, Any]:
        asked = self.study.ask(fixed_distributions=space)
        params = dict(asked.params)
        self.study.tell(asked, state=TrialState.FAIL)  # a proposal, not a trial
        return params


class AutoSampler(BaseSampler):
    """hpsearch's default sampler: GP on small fixed spaces, TPE for the rest.

    Args:
        seed: makes the sequence of suggestions reproducible (one worker); None draws one.
    """

    def __init__(self, *, seed: int | None = None) -> None:
        self._gp = GPSampler(seed=seed, n_startup_trials=0, warn_independent_sampling=False)
        self._random = RandomSampler(seed=seed)
        with warnings.catch_warnings():
            # `group` is "experimental" since Optuna 2.8; it is what models conditional
            # parameters jointly, and the warning says nothing a user can act on.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._tpe = TPESampler(
                seed=None if seed is None else seed + 1,
                n_startup_trials=_N_STARTUP,
                multivariate=True,
                group=True,
                constant_liar=True,
            )
        self._space = IntersectionSearchSpace(include_pruned=True)
        self._mirror: _Mirror | None = None
        self._conditional = False
        self._chosen: dict[int, BaseSampler] = {}

    @property
    def uses_gp(self) -> bool:
        """Whether trials still go to GP as far as this sampler has seen (for tests)."""
        return not self._conditional

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False, states=(*_FINISHED, TrialState.RUNNING))
        finished = [t for t in trials if t.state in _FINISHED]
        if len({frozenset(t.params) for t in finished if t.params}) > 1:
            self._conditional = True
        dims = max((len(t.params) for t in finished), default=0)
        use_gp = not (self._conditional or len(finished) >= _GP_MAX_TRIALS or dims > _GP_MAX_DIMS)
        sampler: BaseSampler = self._gp if use_gp else self._tpe
        if use_gp:
            if self._mirror is None:
                self._mirror = _Mirror(self._gp, study.directions)
            self._mirror.sync(trials, trial.number)
            mirrored = self._mirror.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if len(mirrored) < _N_STARTUP:
                sampler = self._random
        self._chosen[trial.number] = sampler
        sampler.before_trial(study, trial)

    def _delegate(self, trial: FrozenTrial) -> BaseSampler:
        # A trial that did not pass through before_trial (a sampler used directly): TPE.
        return self._chosen.get(trial.number, self._tpe)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        sampler = self._delegate(trial)
        if sampler is not self._gp:
            return sampler.infer_relative_search_space(study, trial)
        # Pruned trials count: their parameters are in the mirror as well.
        return {n: d for n, d in self._space.calculate(study).items() if not d.single()}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        sampler = self._delegate(trial)
        if sampler is not self._gp:
            return sampler.sample_relative(study, trial, search_space)
        if not search_space or self._mirror is None:
            return {}
        return self._mirror.sample(search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        sampler = self._delegate(trial)
        if sampler is self._gp:
            # A parameter outside the space every finished trial shares: the space is
            # conditional. This one is drawn at random; TPE models the trials from the next.
            self._conditional = True
            sampler = self._random
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        sampler = self._chosen.pop(trial.number, self._tpe)
        if sampler is not self._gp:
            sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._gp.reseed_rng()
        self._random.reseed_rng()
        self._tpe.reseed_rng()
