"""The study file's search space as Optuna `suggest_*` calls, and back.

A power of two is suggested as its value on a log scale (`batch_size: 32`), which
`study.powers.PowersOfTwo` samples as its exponent; older studies keep what they were made with
(`encoding`: the exponent `log2_<name>`, alone or with the value beside it). Conditional
parameters (`when`) are suggested only when their parents took one of the listed values,
parents first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optuna

from hpsearch.spec import (
    CategoricalParam,
    FloatParam,
    IntParam,
    Param,
    PowerOfTwoParam,
    StudySpec,
)
from hpsearch.study.powers import (
    EXPONENT,
    EXPONENT_PREFIX,
    VALUE,
    exponent,
    value_distribution,
)


def optuna_name(name: str, param: Param, encoding: str = VALUE) -> str:
    """The name a study's sampler searches a parameter under (in an older study, a power of
    two's exponent)."""
    if isinstance(param, PowerOfTwoParam) and encoding != VALUE:
        return EXPONENT_PREFIX + name
    return name


def is_active(param: Param, values: Mapping[str, Any]) -> bool:
    """Whether every `when` condition of `param` holds for the values chosen so far."""
    for parent, allowed in (param.when or {}).items():
        if parent not in values:
            return False
        choices = allowed if isinstance(allowed, list) else [allowed]
        if values[parent] not in choices:
            return False
    return True


Limit = Callable[[str, Mapping[str, Any]], int | None]


def suggest(
    trial: optuna.Trial,
    spec: StudySpec,
    *,
    limit: Limit | None = None,
    encoding: str = VALUE,
) -> dict[str, Any]:
    """Sample one point of the search space: the values the objective sees.

    Args:
        trial: the Optuna trial to suggest on.
        spec: the study.
        limit: for `power_of_two` parameters with `high: auto`, the largest value this
            worker's device holds given the values chosen so far (the batch-size fitter).
            Those parameters are suggested after every parameter that does not depend on
            them, so a searched model or precision is known when the fit is asked.
        encoding: how the study stores powers of two (`study.powers`: an older study's).
    """
    values: dict[str, Any] = {}
    for name in suggestion_order(spec):
        param = spec.search_space[name]
        if not is_active(param, values):
            continue
        bound = None
        if isinstance(param, PowerOfTwoParam) and param.high == "auto" and limit is not None:
            bound = limit(name, dict(values))
        values[name] = _suggest_one(trial, name, param, bound, encoding)
    return values


def suggestion_order(spec: StudySpec) -> list[str]:
    """Parents before children (`when`), and device-bounded parameters as late as they can be."""
    order = spec.ordered_parameters()
    late = {
        n
        for n, p in spec.search_space.items()
        if isinstance(p, PowerOfTwoParam) and p.high == "auto"
    }
    changed = True
    while changed:  # whatever depends on a late parameter is late too
        changed = False
        for name in order:
            parents = spec.search_space[name].when or {}
            if name not in late and any(parent in late for parent in parents):
                late.add(name)
                changed = True
    return [n for n in order if n not in late] + [n for n in order if n in late]


def _suggest_one(
    trial: optuna.Trial, name: str, param: Param, limit: int | None, encoding: str
) -> Any:
    if isinstance(param, FloatParam):
        return trial.suggest_float(name, param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntParam):
        return trial.suggest_int(name, param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, PowerOfTwoParam):
        high = param.high_exponent(limit)
        if encoding == VALUE:
            stored = value_distribution(param.low_exponent, high)
            value = trial.suggest_int(name, stored.low, stored.high, log=True)
            if value != 2 ** exponent(value):
                raise ValueError(
                    f"{name}: the sampler proposed {value}, not a power of two: a study with a "
                    "power_of_two parameter needs hpsearch's sampler (study.make_sampler)"
                )
            return value
        value = 2 ** trial.suggest_int(EXPONENT_PREFIX + name, param.low_exponent, high)
        if encoding != EXPONENT:  # the value beside it, as a one-value distribution
            trial.suggest_int(name, value, value)
        return value
    assert isinstance(param, CategoricalParam)
    return trial.suggest_categorical(name, param.choices)


def to_optuna_params(
    spec: StudySpec, values: Mapping[str, Any], encoding: str = VALUE
) -> dict[str, Any]:
    """User-facing values (`batch_size: 32`) -> the parameters the study's trials hold (in an
    older study, `log2_batch_size: 5`)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        param = spec.search_space[name]
        if isinstance(param, PowerOfTwoParam) and encoding != VALUE:
            out[EXPONENT_PREFIX + name] = exponent(value)
        else:
            out[name] = value
    return out


def grid(spec: StudySpec, *, limits: Mapping[str, int] | None = None) -> dict[str, list[Any]]:
    """Every value of each (discrete) parameter, for the grid sampler: a power of two as its
    exponent `log2_<name>`, as the sampler sees it (`PowersOfTwo`)."""
    out: dict[str, list[Any]] = {}
    for name, param in spec.search_space.items():
        if isinstance(param, CategoricalParam):
            out[name] = list(param.choices)
        elif isinstance(param, PowerOfTwoParam):
            high = param.high_exponent((limits or {}).get(name))
            out[EXPONENT_PREFIX + name] = list(range(param.low_exponent, high + 1))
        elif isinstance(param, IntParam):
            out[name] = list(range(param.low, param.high + 1, param.step))
        else:
            assert param.step is not None  # the spec refuses a grid over a continuous float
            n = int(round((param.high - param.low) / param.step))
            out[name] = [round(param.low + i * param.step, 12) for i in range(n + 1)]
    return out
