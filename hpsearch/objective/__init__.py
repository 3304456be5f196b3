"""One trial: parameters in, a metric out, through the user's function, a command or the trainer.

`types` (what every objective shares), `trial` (the Optuna objective: suggest, run, report and
prune, record), `function`, `command` and `trainer` (the three kinds, side by side). The user's
code never imports optuna: it gets `params` and a `report(metrics, step)` callable.
"""

from __future__ import annotations

from hpsearch.objective.command import (
    REPORT_PREFIX,
    RESULT_PREFIX,
    parse_metrics,
    placeholders,
    render,
    run_command,
)
from hpsearch.objective.function import load_function
from hpsearch.objective.trainer import StudyLimits, data_summary, trainer_options
from hpsearch.objective.trial import build, check
from hpsearch.objective.types import (
    Metrics,
    Report,
    ResumeInfo,
    Runner,
    TrialContext,
    TrialValue,
    UserFunction,
    WorkerStopped,
)

__all__ = [
    "REPORT_PREFIX",
    "RESULT_PREFIX",
    "Metrics",
    "Report",
    "Runner",
    "StudyLimits",
    "TrialContext",
    "ResumeInfo",
    "TrialValue",
    "UserFunction",
    "WorkerStopped",
    "build",
    "check",
    "data_summary",
    "load_function",
    "parse_metrics",
    "placeholders",
    "render",
    "run_command",
    "trainer_options",
]
