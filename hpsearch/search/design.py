"""`SobolStartup`: the start-up trials as one space-filling design shared by every worker.

Independent random draws clump: eight workers that start together often leave whole corners of
the space untried and try two points side by side. Here start-up trial number n takes point n
of a scrambled Sobol sequence, so the first trials of the study, whichever worker runs them,
spread over the space. Every worker derives the same scrambling from the study (its file's seed,
else its name), so the design is one for the fleet, and reproducible.

The k-th parameter a trial suggests takes coordinate k of its point (conditional spaces simply
use the coordinates in the order their parameters are suggested); past `_DIMS` parameters, or
for a distribution it cannot map, it draws at random.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial

_DIMS = 16


def _scale(u: float, low: float, high: float, log: bool) -> float:
    if log:
        return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    return low + u * (high - low)


def _value(u: float, distribution: BaseDistribution) -> Any:
    """The point `u` in [0, 1) of the distribution, evenly over its values."""
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[
            min(int(u * len(distribution.choices)), len(distribution.choices) - 1)
        ]
    if isinstance(distribution, IntDistribution):
        if distribution.log:
            value = round(_scale(u, distribution.low - 0.5, distribution.high + 0.5, True))
        else:
            count = (distribution.high - distribution.low) // distribution.step + 1
            value = distribution.low + min(int(u * count), count - 1) * distribution.step
        return int(min(max(value, distribution.low), distribution.high))
    if isinstance(distribution, FloatDistribution):
        real = _scale(u, distribution.low, distribution.high, distribution.log)
        if distribution.step is not None:
            steps = round((real - distribution.low) / distribution.step)
            real = distribution.low + steps * distribution.step
        return float(min(max(real, distribution.low), distribution.high))
    return None


class SobolStartup(BaseSampler):
    """Start-up trials on a scrambled Sobol design indexed by trial number (see the module)."""

    def __init__(self, design_seed: int, seed: int | None = None) -> None:
        self._design_seed = design_seed
        self._random = RandomSampler(seed=seed)
        self._points = np.empty((0, _DIMS))

    def _point(self, number: int) -> np.ndarray:
        if number >= len(self._points):
            count = max(32, 1 << (number + 1).bit_length())
            from scipy.stats import qmc  # here: importing hpsearch.search stays light

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # balance warnings for non-powers of two
                sobol = qmc.Sobol(_DIMS, scramble=True, seed=self._design_seed)
                self._points = sobol.random(count)
        return self._points[number]

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        coordinate = len(trial.params)
        if coordinate < _DIMS:
            value = _value(float(self._point(trial.number)[coordinate]), param_distribution)
            if value is not None:
                return value
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._random.reseed_rng()
