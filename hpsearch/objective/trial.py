"""One trial: sample the parameters, run the user's function, command or the built-in trainer.

All three report through the same `report(metrics, step)` callable, which records the
intermediate value on the Optuna trial and raises `optuna.TrialPruned` when the pruner says so;
the user's code never imports optuna. A trial that raises ends FAIL with its reason stored in the
`fail_reason` user attribute, and the study goes on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

from hpsearch.budget import BudgetSpent
from hpsearch.errors import ObjectiveError
from hpsearch.objective.command import check_command, command_runner
from hpsearch.objective.function import (
    call_user,
    function_runner,
    load_function,
    takes_trial,
)
from hpsearch.objective.record import record
from hpsearch.objective.resume import RESUME_DIR, with_checkpoints
from hpsearch.objective.trainer import trainer_runner
from hpsearch.objective.types import (
    Metrics,
    Report,
    Runner,
    TrialContext,
    TrialInfo,
    TrialValue,
    UserFunction,
)
from hpsearch.spec import (
    CommandObjective,
    FunctionObjective,
    LoadedSpec,
    PowerOfTwoParam,
    StudySpec,
    TrainerObjective,
)
from hpsearch.storage.artifacts import open_store
from hpsearch.storage.optuna_compat import trial_intermediate_values
from hpsearch.study import suggest

_log = logging.getLogger(__name__)


def check(loaded: LoadedSpec) -> None:
    """Check the objective can run without running it (for `hpsearch validate`)."""
    objective = loaded.spec.objective
    if isinstance(objective, FunctionObjective):
        load_function(loaded)
    elif isinstance(objective, CommandObjective):
        check_command(loaded, objective)


def build(
    loaded: LoadedSpec, context: TrialContext, *, function: UserFunction | None = None
) -> Callable[[optuna.Trial], TrialValue]:
    """The Optuna objective for a spec: `objective(trial) -> value(s)`.

    `function(params, report)` replaces the file's objective (the Python API's own function);
    its `params` hold the file's fixed objective options too, as a `function:` objective's do.
    """
    spec = loaded.spec
    runner = (
        Runner(_call(function, loaded, context))
        if function is not None
        else _runner(loaded, context)
    )
    exponent_params = [n for n, p in spec.search_space.items() if isinstance(p, PowerOfTwoParam)]

    def objective(trial: optuna.Trial) -> TrialValue:
        recorded = False
        try:
            values = suggest(
                trial, spec, limit=lambda name, chosen: runner.limit(trial, name, chosen)
            )
            # Powers of two live in Optuna as exponents (`log2_batch_size: 5`); the dashboard
            # and exports also get the value a person means (`batch_size: 32`), in one write.
            shown = {name: values[name] for name in exponent_params if name in values}
            record(trial, {**context.attrs, **shown})
            recorded = True
            report = _reporter(trial, spec, context.observe)
            return _values(spec, runner.run(trial, values, report))
        except optuna.TrialPruned:
            raise
        except Exception as e:
            # Also when the sampler fails (a missing package): the reason is on the trial.
            attrs = {} if recorded else dict(context.attrs)
            if "fail_reason" not in trial.user_attrs:
                attrs["fail_reason"] = f"{type(e).__name__}: {e}"[:500]
            record(trial, attrs)
            raise

    return objective


def _call(function: UserFunction, loaded: LoadedSpec, context: TrialContext) -> Callable[..., Any]:
    options = getattr(loaded.spec.objective, "options", {})
    fixed = {} if isinstance(loaded.spec.objective, TrainerObjective) else dict(options)

    def run(trial: optuna.Trial, values: dict[str, Any], report: Report, info: TrialInfo) -> Any:
        return call_user(function, {**fixed, **values}, report, info)

    resumes = takes_trial(function)
    base, shared = context.artifacts / RESUME_DIR, open_store(loaded) if resumes else None
    return with_checkpoints(run, base, shared, enabled=resumes)


def _runner(loaded: LoadedSpec, context: TrialContext) -> Runner:
    objective = loaded.spec.objective
    if isinstance(objective, FunctionObjective):
        return function_runner(loaded, objective, context)
    if isinstance(objective, CommandObjective):
        return command_runner(loaded, objective, context)
    assert isinstance(objective, TrainerObjective)
    return trainer_runner(loaded, objective, context)


def _reporter(
    trial: optuna.Trial,
    spec: StudySpec,
    observe: Callable[[optuna.Trial, int, float], None] | None,
) -> Report:
    metric = spec.metrics[0]
    multi = len(spec.study_directions) > 1

    def report(value: Metrics | float, step: int) -> None:
        number = _pick(value, metric)
        if _recorded(trial, step, f"{metric}@{step}" if multi else None):
            # A resumed trial reporting again an epoch that its earlier try recorded (copied
            # into it when it was queued): recorded once, claimed from the budget once.
            return
        if observe is not None:
            observe(trial, step, number)
        if multi:
            # Optuna prunes single-objective studies only; keep the curve for inspection.
            trial.set_user_attr(f"{metric}@{step}", number)
            return
        try:
            trial.report(number, step)
        except BudgetSpent:
            # The study's epoch budget is spent: this epoch is not recorded, the trial ends
            # with what it has (PRUNED keeps its curve; the sampler learns nothing false).
            trial.set_user_attr("prune_reason", "budget.epochs spent")
            raise optuna.TrialPruned(f"the study's epoch budget is spent at step {step}") from None
        if trial.should_prune():
            trial.set_user_attr("prune_reason", f"{metric}={number:.6g} at step {step}")
            raise optuna.TrialPruned(f"pruned at step {step} with {metric}={number:.6g}")

    return report


def _recorded(trial: optuna.Trial, step: int, attr: str | None) -> bool:
    if attr is not None:
        return attr in trial.user_attrs
    return step in trial_intermediate_values(trial)


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
