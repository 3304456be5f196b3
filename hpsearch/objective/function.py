"""The `function:` objective: the user's own Python `name(params, report)`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import optuna

from hpsearch.errors import SpecError
from hpsearch.objective.types import Report, Runner, UserFunction
from hpsearch.spec import FunctionObjective, LoadedSpec


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


def function_runner(loaded: LoadedSpec, objective: FunctionObjective) -> Runner:
    """Call the user's function with the fixed options and the sampled values."""
    function = load_function(loaded)
    options = objective.options

    def run(trial: optuna.Trial, values: dict[str, Any], report: Report) -> Any:
        return function({**options, **values}, report)

    return Runner(run)
