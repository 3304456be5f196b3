"""How a study stores its power-of-two parameters (`type: power_of_two`), and the sampler that
searches them on the log2 scale.

Optuna has no "power of two" distribution, and a categorical list may not change between
workers (each GPU's own `high: auto`). So a trial stores the value a person means under the
parameter's own name, `batch_size: 32`, as an integer on a log scale
(`IntDistribution(16, 128, log=True)`): optuna-dashboard, the `optuna` CLI, `study.best_params`,
Optuna's log lines and the report's plots all show the batch size, and nothing else.

The sampler, though, sees the integer exponent: `PowersOfTwo` wraps whatever sampler the study
has and hands it the study with every power of two read as `log2_<name>` (16-128 as
`IntDistribution(4, 7)`, 32 as 5), and turns its proposals back into powers of two. The wrapped
sampler sees exactly the trials it would see if the exponent were stored, so it proposes the
same points: every sampler models the parameter on the log2 scale with each power of two one
step. (Suggesting the value itself on a log scale, each proposal rounded to a power of two, was
measured worse: GP and TPE then model every integer between the powers and propose points that
round to configurations already tried.)

Older studies keep what they were made with (`encoding`): `exponent` (hpsearch stored only
`log2_<name>`) and `value` (the exponent sampled, the value stored beside it as a one-value
distribution). Changing either would make their search space look conditional to the sampler.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from hpsearch.storage.attrs import POWER_OF_TWO_ATTR, SPACE_ATTR
from hpsearch.storage.optuna_compat import TranslatedStudy, trial_id
from hpsearch.study.join import read_attr

ENCODING_ATTR = POWER_OF_TWO_ATTR
EXPONENT_PREFIX = "log2_"
# `POWER_OF_TWO_ATTR`'s values. VALUE: the value only, sampled as its exponent (`PowersOfTwo`).
# EXPONENT_AND_VALUE: `log2_batch_size` sampled, `batch_size` beside it (studies made by
# hpsearch 0.1's December builds). EXPONENT: `log2_batch_size` only (studies made before).
VALUE, EXPONENT_AND_VALUE, EXPONENT = "value-only", "value", "exponent"
ENCODINGS = (VALUE, EXPONENT_AND_VALUE, EXPONENT)


def encoding_of(attrs: Mapping[str, Any]) -> str:
    """How a study stores its powers of two, from its attributes (user and system merged)."""
    encoding = attrs.get(ENCODING_ATTR)
    if encoding in ENCODINGS:
        return str(encoding)
    # A study hpsearch made before the attribute existed stored exponents only; one made by
    # Optuna itself (the benchmarks, a user's own) is sampled as hpsearch samples new ones.
    return EXPONENT if attrs.get(SPACE_ATTR) is not None else VALUE


def study_encoding(study: optuna.Study) -> str:
    """`encoding_of` a stored study."""
    return encoding_of(
        {ENCODING_ATTR: read_attr(study, ENCODING_ATTR), SPACE_ATTR: read_attr(study, SPACE_ATTR)}
    )


def stored_as_exponents(attrs: Mapping[str, Any]) -> bool:
    """Whether a study stores its powers of two as `log2_<name>` exponents only."""
    return encoding_of(attrs) == EXPONENT


def value_distribution(low_exponent: int, high_exponent: int) -> IntDistribution:
    """The stored distribution of the powers 2**low_exponent .. 2**high_exponent."""
    return IntDistribution(2**low_exponent, 2**high_exponent, log=True)


def exponent_distribution(values: IntDistribution) -> IntDistribution:
    """What the sampler sees of a stored `value_distribution`."""
    return IntDistribution(exponent(values.low), exponent(values.high))


def exponent(value: Any) -> int:
    """log2 of a power of two."""
    return int(value).bit_length() - 1


class PowersOfTwo(BaseSampler):
    """`inner`, searching the power-of-two parameters `names` as their exponents.

    Everything else is the wrapped sampler's own, so its modelling, seeding and parallel
    behaviour are unchanged (see the module's docstring); `inner` is the sampler itself, for
    code that needs its type.
    """

    def __init__(self, inner: BaseSampler, names: Iterable[str]) -> None:
        self.inner = inner
        self._names = frozenset(names)
        self._finished: dict[int, tuple[FrozenTrial, FrozenTrial]] = {}  # id -> (read, seen)

    # --- the translation ---------------------------------------------------------------------

    def _is_power(self, name: str, distribution: BaseDistribution) -> bool:
        return name in self._names and isinstance(distribution, IntDistribution)

    def seen(self, trial: FrozenTrial) -> FrozenTrial:
        """`trial` as the wrapped sampler sees it: powers of two as `log2_<name>` exponents."""
        if not any(self._is_power(n, d) for n, d in trial.distributions.items()):
            return trial
        known = self._finished.get(trial_id(trial))
        if known is not None and known[0] is trial:
            return known[1]
        params: dict[str, Any] = {}
        distributions: dict[str, BaseDistribution] = {}
        for name, distribution in trial.distributions.items():
            if self._is_power(name, distribution):
                assert isinstance(distribution, IntDistribution)
                params[EXPONENT_PREFIX + name] = exponent(trial.params[name])
                distributions[EXPONENT_PREFIX + name] = exponent_distribution(distribution)
            else:
                params[name], distributions[name] = trial.params[name], distribution
        seen = FrozenTrial(
            number=trial.number, state=trial.state, value=None, values=trial.values,
            datetime_start=trial.datetime_start, datetime_complete=trial.datetime_complete,
            params=params, distributions=distributions, user_attrs=trial.user_attrs,
            system_attrs=trial.system_attrs, intermediate_values=trial.intermediate_values,
            trial_id=trial_id(trial),
        )  # fmt: skip
        if trial.state.is_finished() and trial.state != TrialState.WAITING:
            self._finished[trial_id(trial)] = (trial, seen)
        return seen

    def _view(self, study: Study) -> Study:
        return cast(Study, TranslatedStudy(study, self.seen))

    def _inner(self, name: str, distribution: BaseDistribution) -> tuple[str, BaseDistribution]:
        if self._is_power(name, distribution):
            assert isinstance(distribution, IntDistribution)
            return EXPONENT_PREFIX + name, exponent_distribution(distribution)
        return name, distribution

    def _outer_value(self, name: str, value: Any) -> tuple[str, Any]:
        value_name = name.removeprefix(EXPONENT_PREFIX)
        if name.startswith(EXPONENT_PREFIX) and value_name in self._names:
            return value_name, 2 ** int(value)
        return name, value

    def _outer(self, name: str, distribution: BaseDistribution) -> tuple[str, BaseDistribution]:
        value_name = name.removeprefix(EXPONENT_PREFIX)
        if name.startswith(EXPONENT_PREFIX) and value_name in self._names:
            assert isinstance(distribution, IntDistribution)
            return value_name, value_distribution(distribution.low, distribution.high)
        return name, distribution

    # --- the sampler -------------------------------------------------------------------------

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        space = self.inner.infer_relative_search_space(self._view(study), self.seen(trial))
        return dict(self._outer(n, d) for n, d in space.items())

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        inner_space = dict(self._inner(n, d) for n, d in search_space.items())
        proposed = self.inner.sample_relative(self._view(study), self.seen(trial), inner_space)
        return dict(self._outer_value(n, v) for n, v in proposed.items())

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        view, seen = self._view(study), self.seen(trial)
        name, distribution = self._inner(param_name, param_distribution)
        value = self.inner.sample_independent(view, seen, name, distribution)
        return self._outer_value(name, value)[1]

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(self._view(study), self.seen(trial))

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Any,
    ) -> None:
        self.inner.after_trial(self._view(study), self.seen(trial), state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def unwrapped(sampler: BaseSampler) -> BaseSampler:
    """The study's own sampler, under `PowersOfTwo`."""
    return sampler.inner if isinstance(sampler, PowersOfTwo) else sampler
