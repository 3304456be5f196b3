"""The search space: one model per parameter kind, and `param_contains` for enqueued values."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from hpsearch.spec._base import Problem, Scalar, SpecModel

When = dict[str, Union[Scalar, list[Scalar]]]  # noqa: UP007


class _Param(SpecModel):
    when: When | None = None


class FloatParam(_Param):
    """A real number in [low, high], optionally on a log scale or a grid of `step`."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_bounds(self.low, self.high)
        if self.log and self.low <= 0:
            raise Problem("low", f"log scale needs low > 0, but got {self.low}")
        if self.step is not None:
            if self.log:
                raise Problem("step", "`step` and `log: true` cannot be combined; drop one")
            if self.step <= 0:
                raise Problem("step", f"`step` must be > 0, but got {self.step}")
            _check_step(self.step, self.low, self.high)
        return self


def _check_step(step: float, low: float, high: float) -> None:
    # Optuna would quietly sample `low` alone: a parameter that is a constant in disguise.
    if step > high - low:
        raise Problem(
            "step",
            f"`step` {step:g} is larger than high - low = {high - low:g}, so only low={low:g} "
            "could be sampled; make the step smaller or widen the range",
        )


class IntParam(_Param):
    """An integer in [low, high], optionally on a log scale or a grid of `step`."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = 1

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_bounds(self.low, self.high)
        if self.log and self.low < 1:
            raise Problem("low", f"log scale needs low >= 1, but got {self.low}")
        if self.step < 1:
            raise Problem("step", f"`step` must be >= 1, but got {self.step}")
        if self.log and self.step != 1:
            raise Problem("step", "`step` and `log: true` cannot be combined; drop one")
        _check_step(self.step, self.low, self.high)
        return self


class PowerOfTwoParam(_Param):
    """A power of two in [low, high], sampled as its integer exponent.

    `high: auto` means the largest power of two that fits this device (see docs/batch-size.md).
    """

    type: Literal["power_of_two"]
    low: int
    high: int | Literal["auto"]

    @model_validator(mode="after")
    def _check(self) -> PowerOfTwoParam:
        if self.low < 1 or self.low & (self.low - 1):
            raise Problem("low", f"`low` must be a power of two such as 8, but got {self.low}")
        if self.high != "auto":
            if self.high < self.low:
                raise Problem("high", f"`high` must be >= low ({self.low}), but got {self.high}")
            if self.high & (self.high - 1):
                below = 1 << (self.high.bit_length() - 1)
                raise Problem(
                    "high",
                    f"`high` must be a power of two (or `auto`), but got {self.high}; "
                    f"use {below} or {below * 2}",
                )
        return self

    @property
    def low_exponent(self) -> int:
        return self.low.bit_length() - 1

    def high_exponent(self, limit: int | None = None) -> int:
        """The largest exponent allowed by `high` and by a device limit in samples, if any."""
        caps = [c for c in (None if self.high == "auto" else self.high, limit) if c is not None]
        if not caps:
            raise ValueError("`high: auto` needs the device limit")
        return max(self.low_exponent, math.floor(math.log2(min(caps))))


class CategoricalParam(_Param):
    """One of a list of choices (quote YAML words such as `on`/`off`, which read as booleans)."""

    type: Literal["categorical"]
    choices: list[Scalar]

    @field_validator("choices")
    @classmethod
    def _non_empty(cls, choices: list[Scalar]) -> list[Scalar]:
        if not choices:
            raise ValueError("`choices` must list at least one value, but got []")
        if len(set(map(repr, choices))) != len(choices):
            raise ValueError(f"`choices` must not repeat a value, but got {choices}")
        return choices


def _check_bounds(low: float, high: float) -> None:
    if not low < high:
        raise Problem("high", f"`high` must be > low ({low}), but got {high}")


Param = Annotated[
    Union[FloatParam, IntParam, PowerOfTwoParam, CategoricalParam],  # noqa: UP007
    Field(discriminator="type"),
]


def describe_param(param: Param) -> str:
    """The values a parameter can take, for messages: `a float in [0.8, 0.99]`."""
    if isinstance(param, CategoricalParam):
        return f"one of {', '.join(map(str, param.choices))}"
    kind = {FloatParam: "a float", IntParam: "an integer", PowerOfTwoParam: "a power of two"}
    step = getattr(param, "step", None)
    grid = f" in steps of {step}" if step not in (None, 1) else ""
    return f"{kind[type(param)]} in [{param.low}, {param.high}]{grid}"


def param_contains(param: Param, value: Any) -> bool:
    """Whether `value` is a possible sample of `param` (used for enqueued trials)."""
    if isinstance(param, CategoricalParam):
        return any(type(value) is type(c) and value == c for c in param.choices)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(param, PowerOfTwoParam):
        high = math.inf if param.high == "auto" else param.high
        return (
            isinstance(value, int)
            and value >= 1
            and not value & (value - 1)
            and (param.low <= value <= high)
        )
    if isinstance(param, IntParam) and not float(value).is_integer():
        return False
    if not param.low <= value <= param.high:
        return False
    if param.step is not None:
        k = (value - param.low) / param.step
        return abs(k - round(k)) < 1e-9
    return True
