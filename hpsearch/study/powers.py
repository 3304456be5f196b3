"""Power-of-two parameters stored as themselves (`batch_size: 32`), sampled on the log2 scale.

Optuna has no "power of two" distribution, and a categorical list may not change between
workers (each GPU's own `high: auto`). So a power of two is an integer on a log scale,
`IntDistribution(low, high, log=True)`, and `PowersOfTwo` wraps whatever sampler the study has,
rounding each proposal for those parameters to the nearest power of two (on the log2 scale)
before Optuna stores it. Every Optuna tool then shows the value a person means, and TPE, GP,
CMA-ES, QMC and random sampling all model the parameter on the log scale.

The bounds reach half an octave past the lowest and the highest power (16-128 is stored as
`IntDistribution(12, 181, log=True)`): rounding then gives each power of two an equal share of
the log range, as the exponent did, rather than half a share to the two ends.

Studies made before this store the exponent under `log2_<name>`; they keep
it (`uses_exponents`), so their trials and models stay whole.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from hpsearch.study.join import SPACE_ATTR, read_attr

# How a study stores its powers of two: "value" (`batch_size: 32`) or "exponent"
# (`log2_batch_size: 5`, studies made before the attribute existed).
ENCODING_ATTR = "hpsearch:power_of_two"
VALUE, EXPONENT = "value", "exponent"


def value_distribution(low_exponent: int, high_exponent: int) -> IntDistribution:
    """The stored distribution of the powers 2**low_exponent .. 2**high_exponent."""
    low = max(1, math.ceil(2 ** (low_exponent - 0.5)))
    high = max(low, math.floor(2 ** (high_exponent + 0.5)))
    return IntDistribution(low, high, log=True)


def nearest_power(value: float, distribution: IntDistribution) -> int:
    """The power of two nearest `value` on the log2 scale, within the distribution's powers."""
    lowest = math.ceil(math.log2(distribution.low))
    highest = math.floor(math.log2(distribution.high))
    exponent = round(math.log2(max(float(value), 1.0)))
    return int(2 ** min(max(exponent, lowest), highest))


class PowersOfTwo(BaseSampler):
    """`sampler`, with its proposals for the power-of-two parameters `names` rounded.

    Everything else is the wrapped sampler's own, so its modelling, seeding and parallel
    behaviour are unchanged; `inner` is the sampler itself, for code that needs its type.
    """

    def __init__(self, sampler: BaseSampler, names: Iterable[str]) -> None:
        self.inner = sampler
        self._names = frozenset(names)

    def _round(self, name: str, value: Any, distribution: BaseDistribution) -> Any:
        if name in self._names and isinstance(distribution, IntDistribution) and distribution.log:
            return nearest_power(value, distribution)
        return value

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        params = self.inner.sample_relative(study, trial, search_space)
        return {n: self._round(n, v, search_space[n]) for n, v in params.items()}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        value = self.inner.sample_independent(study, trial, param_name, param_distribution)
        return self._round(param_name, value, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def uses_exponents(study: optuna.Study) -> bool:
    """Whether the study stores powers of two as `log2_<name>` exponents (an older study)."""
    encoding = read_attr(study, ENCODING_ATTR)
    made_by_hpsearch = encoding is not None or read_attr(study, SPACE_ATTR) is not None
    return stored_as_exponents({ENCODING_ATTR: encoding, SPACE_ATTR: made_by_hpsearch or None})


def stored_as_exponents(attrs: Mapping[str, Any]) -> bool:
    """`uses_exponents`, from the study's attributes already read (user and system merged)."""
    encoding = attrs.get(ENCODING_ATTR)
    # A study hpsearch made before the attribute existed stored exponents; one made by Optuna
    # itself (the benchmarks, a user's own) has no exponents to keep.
    return encoding == EXPONENT or (encoding is None and attrs.get(SPACE_ATTR) is not None)
