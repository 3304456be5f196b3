"""One trial: sample the parameters, run the user's function, command or the built-in trainer.

All three report through the same `report(metrics, step)` callable, which records the
intermediate value on the Optuna trial and raises `optuna.TrialPruned` when the pruner says so;
the user's code never imports optuna. A trial that raises ends FAIL with its reason stored in the
`fail_reason` user attribute, and the study goes on.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from hpsearch import command
from hpsearch.errors import ObjectiveError, SpecError
from hpsearch.resilient import ResilientRDBStorage
from hpsearch.search_space import suggest
from hpsearch.spec import (
    CommandObjective,
    FunctionObjective,
    LoadedSpec,
    PowerOfTwoParam,
    StudySpec,
    TrainerObjective,
)

_log = logging.getLogger(__name__)

Metrics = Mapping[str, float]
Report = Callable[[Metrics | float, int], None]
UserFunction = Callable[[dict[str, Any], Report], Any]
TrialValue = float | list[float]


@dataclass(frozen=True)
class TrialContext:
    """What the worker knows that a trial needs: where artifacts go, what to record."""

    artifacts: Path
    attrs: Mapping[str, Any] = field(default_factory=dict)


class WorkerStopped(KeyboardInterrupt):
    """Stops the worker from inside a trial: Optuna fails the trial, the worker queues it again.

    A KeyboardInterrupt, because Optuna records the trial as FAIL and then re-raises only those
    (any other exception would be caught by `catch=` and the worker would go on).
    """

    def __init__(self, reason: str, *, exit_code: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


@dataclass(frozen=True)
class Runner:
    """How one kind of objective runs a trial, and the per-device bounds of its search space."""

    run: Callable[[optuna.Trial, dict[str, Any], Report], Any]
    limits: Callable[[optuna.Trial], Mapping[str, int]] = lambda trial: {}


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
            assert module_spec is not None and module_spec.loader is not None
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


def check(loaded: LoadedSpec) -> None:
    """Check the objective can run without running it (for `hpsearch validate`)."""
    objective = loaded.spec.objective
    if isinstance(objective, FunctionObjective):
        load_function(loaded)
    elif isinstance(objective, CommandObjective):
        known = set(loaded.spec.search_space) | set(objective.options)
        try:
            fields = command.placeholders(objective.command)
        except ObjectiveError as e:
            raise loaded.error(("objective", "command"), str(e)) from None
        for name in fields:
            if name not in known:
                raise loaded.error(
                    ("objective", "command"),
                    f"{{{name}}} is neither a search_space parameter nor an objective option; "
                    f"known: {', '.join(sorted(known)) or 'none'}",
                )


def build(loaded: LoadedSpec, context: TrialContext) -> Callable[[optuna.Trial], TrialValue]:
    """The Optuna objective for a spec: `objective(trial) -> value(s)`."""
    spec = loaded.spec
    runner = _runner(loaded, context)
    exponent_params = [n for n, p in spec.search_space.items() if isinstance(p, PowerOfTwoParam)]

    def objective(trial: optuna.Trial) -> TrialValue:
        values = suggest(trial, spec, limits=runner.limits(trial))
        # Powers of two live in Optuna as exponents (`log2_batch_size: 5`); the dashboard and
        # exports also get the value a person means (`batch_size: 32`), in the same write.
        shown = {name: values[name] for name in exponent_params if name in values}
        _set_attrs(trial, {**context.attrs, **shown})
        report = _reporter(trial, spec)
        try:
            return _values(spec, runner.run(trial, values, report))
        except optuna.TrialPruned:
            raise
        except Exception as e:
            if "fail_reason" not in trial.user_attrs:
                trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:500])
            raise

    return objective


def _set_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Record the worker's attributes on the trial, in one transaction where the storage can."""
    missing = {k: v for k, v in attrs.items() if trial.user_attrs.get(k) != v}
    # NOTE: Optuna wraps an RDBStorage in a cache (`_backend`) and keeps a copy of the trial
    # (`_cached_frozen_trial`); both are private but stable within optuna 5.0.x, which we pin.
    backend = getattr(trial.storage, "_backend", trial.storage)
    if isinstance(backend, ResilientRDBStorage) and missing:
        backend.set_trial_user_attrs(trial._trial_id, missing)
        trial._cached_frozen_trial.user_attrs.update(missing)
        return
    for key, value in missing.items():
        trial.set_user_attr(key, value)


def _runner(loaded: LoadedSpec, context: TrialContext) -> Runner:
    objective = loaded.spec.objective
    if isinstance(objective, FunctionObjective):
        function = load_function(loaded)
        options = objective.options

        def run_function(trial: optuna.Trial, values: dict[str, Any], report: Report) -> Any:
            return function({**options, **values}, report)

        return Runner(run_function)
    if isinstance(objective, CommandObjective):
        check(loaded)
        return _command_runner(loaded, objective)
    assert isinstance(objective, TrainerObjective)
    from hpsearch.trainer_objective import trainer_runner  # torch is imported only here

    return trainer_runner(loaded, objective, context)


def _command_runner(loaded: LoadedSpec, objective: CommandObjective) -> Runner:
    def run(trial: optuna.Trial, values: dict[str, Any], report: Report) -> Any:
        params = {**objective.options, **values}
        env = {f"HPSEARCH_PARAM_{k.upper()}": str(v) for k, v in params.items()}
        env["HPSEARCH_TRIAL_NUMBER"] = str(trial.number)
        env["HPSEARCH_STUDY"] = trial.study.study_name
        return command.run_command(
            command.render(objective.command, params),
            env=env,
            cwd=loaded.directory,
            report=report,
            timeout=objective.trial_timeout,
        )

    return Runner(run)


def _reporter(trial: optuna.Trial, spec: StudySpec) -> Report:
    metric = spec.metrics[0]
    multi = len(spec.study_directions) > 1

    def report(value: Metrics | float, step: int) -> None:
        number = _pick(value, metric)
        if multi:
            # Optuna prunes single-objective studies only; keep the curve for inspection.
            trial.set_user_attr(f"{metric}@{step}", number)
            return
        trial.report(number, step)
        if trial.should_prune():
            trial.set_user_attr("prune_reason", f"{metric}={number:.6g} at step {step}")
            raise optuna.TrialPruned(f"pruned at step {step} with {metric}={number:.6g}")

    return report


def _pick(value: Any, metric: str) -> float:
    if isinstance(value, Mapping):
        if metric not in value:
            raise ObjectiveError(
                f"the objective reported {', '.join(map(str, value)) or 'nothing'} but not the "
                f"study's metric {metric!r}; report it or change `metric:`"
            )
        value = value[metric]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ObjectiveError(f"a reported value must be a number, but got {value!r}")
    number = float(value)
    if math.isnan(number):
        raise ObjectiveError(f"{metric} is NaN; the training diverged")
    return number


def _values(spec: StudySpec, result: Any) -> TrialValue:
    metrics = spec.metrics
    if len(metrics) == 1:
        return _pick(result, metrics[0])
    if isinstance(result, Mapping):
        return [_pick(result, m) for m in metrics]
    if (
        isinstance(result, Sequence)
        and not isinstance(result, str)
        and len(result) == len(metrics)
    ):
        return [_pick(v, m) for v, m in zip(result, metrics, strict=True)]
    raise ObjectiveError(
        f"a study with metrics {metrics} needs a dict with those keys or a tuple of "
        f"{len(metrics)} numbers, but the objective returned {result!r}"
    )
