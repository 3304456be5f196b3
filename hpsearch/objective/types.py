"""The types every objective shares: what a trial reports, how it runs, how a worker stops it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

Metrics = Mapping[str, float]
Report = Callable[[Metrics | float, int], None]
UserFunction = Callable[[dict[str, Any], Report], Any]
TrialValue = float | list[float]


@dataclass(frozen=True)
class TrialContext:
    """What the worker knows that a trial needs: where artifacts go, what to record, and whom
    to tell of each reported step (`observe(trial, step, value)`: the progress bar, and the
    check for a study stopped meanwhile, which may raise to end the trial)."""

    artifacts: Path
    attrs: Mapping[str, Any] = field(default_factory=dict)
    observe: Callable[[optuna.Trial, int, float], None] | None = None


@dataclass(frozen=True)
class ResumeInfo:
    """What the user's code needs to resume a trial (docs/workers.md, "Resuming a trial").

    `checkpoint_dir`: the trial's own folder, shared by its retries (and, with a shared
    artifact store, copied to and from it around each reported step); `resume_epoch`: the last
    step the study recorded for this trial, 0 for a fresh one.
    """

    number: int
    checkpoint_dir: Path
    resume_epoch: int


class WorkerStopped(KeyboardInterrupt):
    """Stops the worker from inside a trial: Optuna fails the trial, the worker queues it again.

    A KeyboardInterrupt, because Optuna records the trial as FAIL and then re-raises only those
    (any other exception would be caught by `catch=` and the worker would go on).
    """

    def __init__(self, reason: str, *, exit_code: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


def _no_limit(trial: optuna.Trial, name: str, chosen: Mapping[str, Any]) -> int | None:
    return None


@dataclass(frozen=True)
class Runner:
    """How one kind of objective runs a trial, and the per-device bounds of its search space.

    `limit(trial, name, chosen)`: the largest value this worker's device holds for the
    `high: auto` parameter `name`, given the values `chosen` so far in this trial (a searched
    model changes what fits); it is asked after every parameter it can depend on.
    """

    run: Callable[[optuna.Trial, dict[str, Any], Report], Any]
    limit: Callable[[optuna.Trial, str, Mapping[str, Any]], int | None] = _no_limit
