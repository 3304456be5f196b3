"""One trial: sample the parameters, run the user's function, command or the built-in trainer.

All three report through the same `report(metrics, step)` callable, which records the
intermediate value on the Optuna trial and raises `optuna.TrialPruned` when the pruner says so;
the user's code never imports optuna. A trial that raises ends FAIL with its reason stored in the
`fail_reason` user attribute, and the study goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

from hpsearch.errors import ObjectiveError
from hpsearch.objective.checkpoints import CHECKPOINT_ATTR
from hpsearch.objective.command import check_command, command_runner
from hpsearch.objective.function import (
    call_user,
    function_runner,
    load_function,
    takes_trial,
)
from hpsearch.objective.record import record
from hpsearch.objective.reporting import TrialReporter, pick
from hpsearch.objective.resume import RESUME_DIR, with_checkpoints
from hpsearch.objective.trainer import trainer_runner
from hpsearch.objective.types import (
    Report,
    ResumeInfo,
    Runner,
    TrialContext,
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
from hpsearch.storage.attrs import FAIL_REASON_ATTR
from hpsearch.study import EXPONENT, VALUE, MetricLog, study_encoding, suggest
from hpsearch.tracking import Trackers, TrialInfo, TrialState, open_trackers

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
    The trackers of `tracking:` are told of each trial's start, steps and end here, so every
    way of running a trial (the worker, the Python API) sends it.

    Raises:
        HpsearchError: a tracker's package is missing (one line naming the extra).
    """
    spec = loaded.spec
    runner = (
        Runner(_call(function, loaded, context))
        if function is not None
        else _runner(loaded, context)
    )
    powers = [n for n, p in spec.search_space.items() if isinstance(p, PowerOfTwoParam)]
    trackers = open_trackers(spec.tracking, loaded.directory)
    encoding: dict[str, str] = {}  # how the study stores powers of two, read once

    def objective(trial: optuna.Trial) -> TrialValue:
        recorded = False
        tracked = _Tracked(trackers, trial)
        metrics = MetricLog(spec.metrics)
        try:
            if "powers" not in encoding:
                encoding["powers"] = study_encoding(trial.study) if powers else VALUE
            values = suggest(
                trial,
                spec,
                limit=lambda name, chosen: runner.limit(trial, name, chosen),
                encoding=encoding["powers"],
            )
            # An older study keeps powers of two as exponents only (`log2_batch_size: 5`); the
            # dashboard and exports also get the value a person means (`batch_size: 32`).
            old = encoding["powers"] == EXPONENT
            shown = {n: values[n] for n in powers if n in values} if old else {}
            record(trial, {**context.attrs, **shown})
            recorded = True
            info = tracked.start(values, context.attrs)
            report = TrialReporter(
                trial, spec, observe=context.observe, trackers=trackers, info=info,
                artifacts=context.artifacts, metrics=metrics,
            )  # fmt: skip
            returned = runner.run(trial, values, report)
            result = _values(spec, returned)
            if report.pruned is not None:
                raise report.pruned  # the trial's code stopped cleanly after the prune
            record(trial, metrics.attrs(returned, trial.user_attrs))
            tracked.finish("COMPLETE", result)
            return result
        except optuna.TrialPruned:
            record(trial, metrics.attrs(None, trial.user_attrs))
            tracked.finish("PRUNED")
            raise
        except Exception as e:
            # Also when the sampler fails (a missing package): the reason is on the trial.
            attrs = {} if recorded else dict(context.attrs)
            if FAIL_REASON_ATTR not in trial.user_attrs:
                attrs[FAIL_REASON_ATTR] = f"{type(e).__name__}: {e}"[:500]
            record(trial, {**metrics.attrs(None, trial.user_attrs), **attrs})
            tracked.finish("FAIL")
            raise
        except BaseException:
            tracked.finish("FAIL")  # stopped by a signal: failed, and queued again
            raise

    return objective


class _Tracked:
    """One trial as the trackers see it: started once its parameters are known."""

    def __init__(self, trackers: Trackers, trial: optuna.Trial) -> None:
        self._trackers = trackers
        self._trial = trial
        self._info: TrialInfo | None = None

    def start(self, values: Mapping[str, Any], attrs: Mapping[str, Any]) -> TrialInfo | None:
        if not self._trackers:
            return None
        tags = {
            k: str(attrs[k]) for k in ("worker", "host", "versions", "git_commit") if k in attrs
        }
        self._info = TrialInfo(self._trial.study.study_name, self._trial.number, values, tags)
        self._trackers.start(self._info)
        return self._info

    def finish(self, state: TrialState, values: TrialValue | None = None) -> None:
        if self._info is None:
            return
        final = None if values is None else values if isinstance(values, list) else [values]
        try:
            checkpoint = self._trial.user_attrs.get(CHECKPOINT_ATTR)
        except Exception:  # the database away while the trial ends: the trackers go on
            checkpoint = None
        self._trackers.finish(self._info, state, final, checkpoint)
        self._info = None


def _call(function: UserFunction, loaded: LoadedSpec, context: TrialContext) -> Callable[..., Any]:
    options = getattr(loaded.spec.objective, "options", {})
    fixed = {} if isinstance(loaded.spec.objective, TrainerObjective) else dict(options)

    def run(trial: optuna.Trial, values: dict[str, Any], report: Report, info: ResumeInfo) -> Any:
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


def _values(spec: StudySpec, result: Any) -> TrialValue:
    metrics = spec.metrics
    if len(metrics) == 1:
        return pick(result, metrics[0])
    if isinstance(result, Mapping):
        return [pick(result, m) for m in metrics]
    if (
        isinstance(result, Sequence)
        and not isinstance(result, str)
        and len(result) == len(metrics)
    ):
        return [pick(v, m) for v, m in zip(result, metrics, strict=True)]
    raise ObjectiveError(
        f"a study with metrics {metrics} needs a dict with those keys or a tuple of "
        f"{len(metrics)} numbers, but the objective returned {result!r}"
    )
