"""`AutoSampler`: Optuna's GP sampler where it is strongest, multivariate TPE where it is not.

On LCBench at 20-50 full trainings GP has several times lower regret than TPE (see
docs/search.md), but its cost grows with the cube of the number of trials and its fit is poor
with many dimensions. So each trial is handed to one of two samplers, decided when it starts:

- GP while the study has fewer than `_GP_MAX_TRIALS` finished trials and at most `_GP_MAX_DIMS`
  parameters, conditional spaces included: Optuna 5's `GPSampler` would sample a conditional
  (dynamic) space parameter by parameter at random, so GP works on a private in-memory mirror
  of the study (hpsearch/search/mirror.py) that models the union of the parameters, inactive
  ones filled in, pruned trials at the value their curve would most likely have reached, and
  other workers' running trials as running (GP's acquisition fantasises their outcomes);
- TPE (multivariate, `group=True` so conditional parameters are modelled jointly,
  `constant_liar` so parallel workers spread out) past those sizes.
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

from hpsearch.search.mirror import Mirror

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
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class AutoSampler(BaseSampler):
    """hpsearch's default sampler: GP on small spaces (conditional ones too), TPE for the rest.

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
        self._mirror: Mirror | None = None
        self._large = False  # the study outgrew GP: TPE from then on
        self._chosen: dict[int, BaseSampler] = {}

    @property
    def uses_gp(self) -> bool:
        """Whether trials still go to GP as far as this sampler has seen (for tests)."""
        return not self._large

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False, states=(*_FINISHED, TrialState.RUNNING))
        finished = sum(t.state in _FINISHED for t in trials)
        dims = len({name for t in trials for name in t.params})
        self._large = self._large or finished >= _GP_MAX_TRIALS or dims > _GP_MAX_DIMS
        sampler: BaseSampler = self._tpe if self._large else self._gp
        if sampler is self._gp:
            if self._mirror is None:
                self._mirror = Mirror(self._gp, study.directions)
            self._mirror.sync(trials, trial.number)
            if self._mirror.completed() < _N_STARTUP:
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
        # Every parameter seen: the mirror fills in the inactive ones.
        space = {} if self._mirror is None else self._mirror.space
        return {n: d for n, d in sorted(space.items()) if not d.single()}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        sampler = self._delegate(trial)
        if sampler is not self._gp:
            return sampler.sample_relative(study, trial, search_space)
        if not search_space or self._mirror is None:
            return {}
        params = self._mirror.sample(search_space)
        if not params:  # GP proposed a configuration already run: this trial is random
            self._chosen[trial.number] = self._random
        return params

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        sampler = self._delegate(trial)
        if sampler is self._gp:
            # A parameter no trial had yet (a new branch of a conditional space): drawn at
            # random this once; the mirror models it from the next trial on.
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
