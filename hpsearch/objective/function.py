"""The `function:` objective: the user's own Python `name(params, report[, trial])`."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from typing import Any

import optuna

from hpsearch.errors import SpecError
from hpsearch.objective.resume import RESUME_DIR, with_checkpoints
from hpsearch.objective.types import Report, ResumeInfo, Runner, TrialContext, UserFunction
from hpsearch.spec import FunctionObjective, LoadedSpec
from hpsearch.storage.artifacts import open_store


def load_function(loaded: LoadedSpec) -> UserFunction:
    """Import `file.py:name` (relative to the study file) or `package.module:name`.

    Raises:
        SpecError: located at `objective.function`, with the reason and the fix.
    """
    objective = loaded.spec.objective
    assert isinstance(objective, FunctionObjective)
    target, _, name = objective.function.rpartition(":")
    where = ("objective", "function")
    try:
        if target.endswith(".py"):
            path = (loaded.directory / target).resolve()
            if not path.is_file():
                raise loaded.error(
                    where, f"no file {path}; the path is relative to the study file"
                )
            module_name = f"hpsearch_user_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            assert module_spec is not None
            assert module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except SpecError:
        raise
    except ImportError as e:
        raise loaded.error(where, f"cannot import {target!r}: {e}") from None
    except Exception as e:  # the user's module failed while running its top level
        raise loaded.error(where, f"importing {target!r} raised {type(e).__name__}: {e}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise loaded.error(where, f"{target!r} has no function {name!r}")
    return function


def takes_trial(function: Callable[..., Any]) -> bool:
    """Whether `function` takes a third argument, the `ResumeInfo` (`train(params, report,
    trial)`); a two-argument function is called as before."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin or an odd callable: the documented two
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    # Named parameters only: a `(*args, **kwargs)` wrapper may pass on to a two-argument one.
    return sum(p.kind in positional for p in parameters) >= 3


def call_user(
    function: Callable[..., Any], params: dict[str, Any], report: Report, info: ResumeInfo
) -> Any:
    """`function(params, report)`, or `function(params, report, info)` when it takes three."""
    if takes_trial(function):
        return function(params, report, info)
    return function(params, report)


def function_runner(
    loaded: LoadedSpec, objective: FunctionObjective, context: TrialContext
) -> Runner:
    """Call the user's function with the fixed options and the sampled values."""
    function = load_function(loaded)
    options = objective.options

    def run(trial: optuna.Trial, values: dict[str, Any], report: Report, info: ResumeInfo) -> Any:
        return call_user(function, {**options, **values}, report, info)

    resumes = takes_trial(function)
    base, shared = context.artifacts / RESUME_DIR, open_store(loaded) if resumes else None
    return Runner(with_checkpoints(run, base, shared, enabled=resumes))
