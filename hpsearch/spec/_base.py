"""Shared pieces of the study-file schema: the frozen base model, key paths and durations."""

from __future__ import annotations

import datetime
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, WithJsonSchema, model_validator

Scalar = Union[bool, int, float, str]  # noqa: UP007 - pydantic needs the runtime union
KeyPath = tuple[Union[str, int], ...]  # noqa: UP007


class Problem(ValueError):
    """A validation failure that knows which key below the current model it is about."""

    def __init__(self, key: str | int | KeyPath, message: str) -> None:
        super().__init__(message)
        self.keys: KeyPath = key if isinstance(key, tuple) else (key,)
        self.message = message


class SpecModel(BaseModel):
    """Base of every study-file model: frozen, strict, and unknown keys are errors.

    Strict, so that `true` is not read as the number 1 and `'8'` not as 8: YAML already types
    every value. Whole floats such as `1e3` are still accepted where an integer is expected.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        if cls.model_config.get("extra") == "forbid":
            valid = list(cls.model_fields)
            for key in data:
                if key not in valid:
                    raise Problem(_key(key), unknown_key_message(str(key), valid))
        ints = _integer_fields(cls)
        if any(isinstance(data.get(k), float) for k in ints):
            data = {k: _whole(v) if k in ints else v for k, v in data.items()}
        return data


def _key(key: Any) -> str:
    return "null" if key is None else str(key)


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


@cache
def _integer_fields(cls: type[BaseModel]) -> frozenset[str]:
    """Fields that take an integer but not a float (`1e3` is then read as 1000)."""
    names = set()
    for name, field in cls.model_fields.items():
        members = _members(field.annotation)
        if int in members and float not in members:
            names.add(name)
    return frozenset(names)


def _members(annotation: Any) -> set[Any]:
    if typing.get_origin(annotation) is Annotated:
        return _members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return {m for arg in typing.get_args(annotation) for m in _members(arg)}
    return {annotation}


def unknown_key_message(key: str, valid: Sequence[str]) -> str:
    """`unknown key; did you mean `x`? valid keys: ...` (the suggestion only when one is close)."""
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return f"unknown key; {hint}valid keys: {', '.join(valid)}"


def suggest(value: str, valid: Sequence[str]) -> str:
    """`did you mean `x`? ` for the closest (or the only prefix-matching) valid value, or ''."""
    close = difflib.get_close_matches(value, valid, n=1)
    if not close and value:
        lower = value.lower()
        close = [v for v in valid if v.lower() == lower or v.startswith(lower)][:1]
    return f"did you mean `{close[0]}`? " if close else ""


def describe(value: Any) -> str:
    """A value as the user wrote it in YAML, for `..., but got X` in messages."""
    if value is None:
        return "an empty value (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, datetime.date):
        return f"the date {value}"
    if isinstance(value, bytes):
        return "binary data"
    return f"a {type(value).__name__}"


# Counts (trials, epochs, retries, seconds between heartbeats) are kept in INTEGER columns of
# every database, and durations become datetimes: larger ones are refused when the file is read,
# before they could change a study.
MAX_COUNT = 2**31 - 1
MAX_SECONDS = 100 * 365 * 86400  # a century


# --- durations -------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_UNIT_WORDS = re.compile(
    r"(\d+(?:\.\d+)?)\s*(seconds?|secs?|minutes?|mins?|hours?|hrs?|days?)", re.IGNORECASE
)
_NEEDED = "a duration such as 90s, 30m, 2h or 1h30m (or a number of seconds) is needed"


def parse_duration(value: Any) -> float:
    """`90s`, `30m`, `2h`, `1h30m`, `1d` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{_NEEDED}, but got {describe(value)}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(rf"(?:\s*{_DURATION.pattern}\s*)+", value):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(value))
    elif isinstance(value, str) and value.strip().startswith("-"):
        raise ValueError(f"a duration must be > 0, but got {value!r}; drop the minus sign")
    elif isinstance(value, str) and _UNIT_WORDS.fullmatch(value.strip()):
        number, word = _UNIT_WORDS.fullmatch(value.strip()).groups()  # type: ignore[union-attr]
        short = f"{number}{word[0].lower()}"
        raise ValueError(f"{_NEEDED}, but got {value!r}; write {short}")
    else:
        raise ValueError(f"{_NEEDED}, but got {describe(value)}")
    if not seconds > 0:
        raise ValueError(f"a duration must be > 0, but got {value!r}; give e.g. 30m")
    if not seconds <= MAX_SECONDS:
        shown = repr(value) if len(repr(value)) <= 24 else repr(value)[:21] + "..."
        raise ValueError(f"a duration must be at most 100 years, but got {shown}")
    return seconds


# In the file a duration is seconds or text such as `1h30m`; the JSON Schema says both, so an
# editor (and a validator) accepts what `load_spec` accepts.
Duration = Annotated[
    float,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^(\s*\d+(\.\d+)?\s*[smhd]\s*)+$"},
            ],
            "examples": ["90s", "30m", "2h", "1h30m"],
        }
    ),
]
