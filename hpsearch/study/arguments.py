"""The Python API's arguments (`hpsearch.api`), checked before anything is read or changed.

A wrong type or an impossible value from Python is a `HpsearchError` with one line naming the
function, the argument and the fix, as the command line reports a bad flag, never a raw
TypeError or pydantic ValidationError from deep inside.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from hpsearch.errors import HpsearchError
from hpsearch.spec import MAX_COUNT, MAX_SECONDS, LoadedSpec


def _path(value: Any) -> str | None:
    ok = isinstance(value, str | os.PathLike) and str(os.fspath(value)).strip()
    return None if ok else "a path to a study file (str or pathlib.Path)"


def _study_file(value: Any) -> str | None:
    return None if isinstance(value, LoadedSpec) else _path(value)


def _optional_text(value: Any) -> str | None:
    return (
        None if value is None or (isinstance(value, str) and value.strip()) else "a non-empty str"
    )


def _optional_path(value: Any) -> str | None:
    return None if value is None else _path(value)


def _n_trials(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return "a whole number of trials (int)"
    return None if 1 <= value <= MAX_COUNT else f"a number of trials from 1 to {MAX_COUNT}"


def _timeout(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "a number of seconds (int or float)"
    ok = math.isfinite(value) and 0 < value <= MAX_SECONDS
    return None if ok else "a number of seconds > 0, at most 100 years"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "True or False"


def _objective(value: Any) -> str | None:
    return None if value is None or callable(value) else "a function objective(params, report)"


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "path": _path, "study_file": _study_file, "storage": _optional_text, "name": _optional_text,
    "n_trials": _n_trials, "timeout": _timeout, "change_budget": _flag,
    "artifacts": _optional_path, "objective": _objective,
}  # fmt: skip


def check_arguments(function: str, arguments: Mapping[str, Any]) -> None:
    """Check the arguments of `hpsearch.<function>` (pass `locals()` first thing).

    Raises:
        HpsearchError: one line naming the argument, what it must be and what it got.
    """
    for name, value in arguments.items():
        check = _CHECKS.get(name)
        needed = check(value) if check is not None else None
        if needed is not None:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise HpsearchError(
                f"hpsearch.{function}({name}=...): must be {needed}, but got {shown}"
            )
