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
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, GPSampler, RandomSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

# GP fits cost O(n^3) and its advantage is on small budgets; past this TPE is as good per
# trial and far cheaper (Optuna's GP takes ~0.2 s a trial at 100 trials, ~1 s at 300).
_GP_MAX_TRIALS = 200
# GP's kernel lengthscales are fitted per dimension; with few trials and many dimensions the
# fit is poor and TPE, which models marginals, does better.
_GP_MAX_DIMS = 16
# Random trials before the models take over: fewer than Optuna's 10, since a study here gets
# 20-50 trainings and half of them random would waste a quarter of the budget.
_N_STARTUP = 8


class AutoSampler(BaseSampler):
    """hpsearch's default sampler: GP on small fixed spaces, TPE for the rest.

    Args:
        seed: makes the sequence of suggestions reproducible (one worker); None draws one.
    """

    def __init__(self, *, seed: int | None = None) -> None:
        tpe_seed = None if seed is None else seed + 1
        self._gp = GPSampler(
            seed=seed,
            n_startup_trials=_N_STARTUP,
            independent_sampler=RandomSampler(seed=seed),
            warn_independent_sampling=False,
        )
        with warnings.catch_warnings():
            # `group` is "experimental" since Optuna 2.8; it is what models conditional
            # parameters jointly, and the warning says nothing a user can act on.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._tpe = TPESampler(
                seed=tpe_seed,
                n_startup_trials=_N_STARTUP,
                multivariate=True,
                group=True,
                constant_liar=True,
            )
        self._conditional = False
        self._chosen: dict[int, BaseSampler] = {}
        self._spaces: dict[int, dict[str, BaseDistribution]] = {}

    @property
    def uses_gp(self) -> bool:
        """Whether the next trial would go to GP as far as this sampler has seen (for tests)."""
        return not self._conditional

    def _pick(self, study: Study) -> BaseSampler:
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not self._conditional and len({frozenset(t.params) for t in finished}) > 1:
            self._conditional = True
        dims = max((len(t.params) for t in finished), default=0)
        if self._conditional or len(finished) >= _GP_MAX_TRIALS or dims > _GP_MAX_DIMS:
            return self._tpe
        return self._gp

    def _delegate(self, trial: FrozenTrial) -> BaseSampler:
        # A trial created outside before_trial (e.g. a sampler used directly): TPE works alone.
        return self._chosen.get(trial.number, self._tpe)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        sampler = self._pick(study)
        self._chosen[trial.number] = sampler
        sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        space = self._delegate(trial).infer_relative_search_space(study, trial)
        self._spaces[trial.number] = space
        return space

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._delegate(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        space = self._spaces.get(trial.number)
        if self._chosen.get(trial.number) is self._gp and space and param_name not in space:
            # A parameter outside the space every finished trial shares: the space is
            # conditional. This one is sampled at random, as GP would; TPE takes the next.
            self._conditional = True
        return self._delegate(trial).sample_independent(
            study, trial, param_name, param_distribution
        )

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._delegate(trial).after_trial(study, trial, state, values)
        self._chosen.pop(trial.number, None)
        self._spaces.pop(trial.number, None)

    def reseed_rng(self) -> None:
        self._gp.reseed_rng()
        self._tpe.reseed_rng()
