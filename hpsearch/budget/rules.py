"""What the study-wide budget counts, and when it is spent: every counting rule in one place.

- **Trials**: a fresh or enqueued trial takes a slot of `n_trials`; the retry of a trial failed
  by its worker (crashed, preempted, stopped) does not: it takes the place of the trial it
  retries, so `n_trials` is the number of distinct trials started.
- **Time**: `timeout` counts from the first trial any worker started, on the database's ledger.
- **GPU-hours**: each finished trial adds its duration once (one device per worker).
- **Epochs**: each reported step of each trial is one epoch, claimed once (a step reported
  again claims nothing).
- **Target**: a completed trial whose metric reaches `budget.target` closes the study for every
  worker.
- **Flags**: `hpsearch run --n-trials/--timeout` (and `hpsearch.run(n_trials=...)`) override the
  file's budget and are an explicit change of a joined study's budget (`for_run`).

With a SQL database the limits are enforced by the ledger (`budget.ledger`) in the transaction
that starts each trial, exactly across workers; with the gRPC proxy, which offers no such
transaction, by counting the study's trials between trials (`trials_started`), which may
overshoot by one trial per worker.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from hpsearch.spec import Budget


class BudgetSpent(Exception):
    """No slot left for a new trial, or no epoch left to record, in this study."""

    def __init__(self, study_id: int, what: str = "budget") -> None:
        super().__init__(f"the {what} of study {study_id} is spent")
        self.study_id = study_id


@dataclass(frozen=True)
class Limits:
    """The budget a run asks for; None means unlimited."""

    n_trials: int | None = None
    timeout_s: float | None = None
    gpu_hours: float | None = None
    epochs: int | None = None

    @classmethod
    def of(cls, budget: Budget) -> Limits:
        return cls(budget.n_trials, budget.timeout, budget.gpu_hours, budget.epochs)

    @property
    def unlimited(self) -> bool:
        return self == Limits()


@dataclass(frozen=True)
class LedgerState:
    """A snapshot of the ledger, for progress lines and `hpsearch status`."""

    claimed: int
    retry_slots: int
    trial_limit: int | None
    started_at: float | None
    timeout_s: float | None
    gpu_seconds: float
    gpu_seconds_limit: float | None
    epochs_used: int = 0
    epoch_limit: int | None = None
    closed: str | None = None  # why no trial may start any more (the target was reached)

    def spent_reason(self, now: float) -> str | None:
        """Why no slot for a new trial can be claimed now, or None while the budget lasts."""
        return self.refuses(now, new_trial=True)

    def refuses(self, now: float, *, new_trial: bool) -> str | None:
        """Why a trial cannot start now, or None when it can: a new (or enqueued) trial needs a
        slot of `n_trials`, a retry does not (`counts_as_new_trial`); both need the rest."""
        if self.closed is not None:
            return self.closed
        if (
            new_trial
            and self.trial_limit is not None
            and self.claimed >= self.trial_limit + self.retry_slots
        ):
            return f"n_trials reached ({self.claimed - self.retry_slots}/{self.trial_limit})"
        if (
            self.timeout_s is not None
            and self.started_at is not None
            and now - self.started_at >= self.timeout_s
        ):
            return f"timeout reached ({self.timeout_s:.0f}s since the first trial)"
        if self.gpu_seconds_limit is not None and self.gpu_seconds >= self.gpu_seconds_limit:
            return f"gpu_hours reached ({self.gpu_seconds / 3600:.2f} h)"
        if self.epoch_limit is not None and self.epochs_used >= self.epoch_limit:
            return f"epochs reached ({self.epochs_used}/{self.epoch_limit})"
        return None


def for_run(
    budget: Budget,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    change: bool = False,
) -> tuple[Budget, bool]:
    """The budget of one run: the file's, with the run's flags over it; and whether the run
    changes a joined study's budget (a flag given, or `change` asked for explicitly)."""
    update: dict[str, object] = {}
    if n_trials is not None:
        update["n_trials"] = n_trials
    if timeout is not None:
        update["timeout"] = float(timeout)
    return budget.model_copy(update=update), change or bool(update)


# Optuna's own attribute on a retry: the numbers of the trials it retries.
RETRY_HISTORY = "retry_history"


def counts_as_new_trial(system_attr_keys: Iterable[str]) -> bool:
    """Whether a trial starting with these system attributes takes a slot of `n_trials`.

    A retry carries Optuna's `retry_history`: it takes its failed trial's place instead.
    """
    return RETRY_HISTORY not in set(system_attr_keys)


def trials_started(trials: Iterable[FrozenTrial]) -> int:
    """Distinct trials started, by the counting rule above (the gRPC proxy's count)."""
    return sum(1 for t in trials if counts_as_new_trial(t.system_attrs))


def gpu_seconds(trial: FrozenTrial) -> float:
    """What a finished trial adds to the GPU-hour budget: its duration on its one device."""
    return trial.duration.total_seconds() if trial.duration is not None else 0.0


def target_reached(
    target: float | None, direction: str, metric: str, trial: FrozenTrial
) -> str | None:
    """Why the study is done: this completed trial reached `budget.target`, or None."""
    if target is None or trial.state != TrialState.COMPLETE or trial.value is None:
        return None
    if not math.isfinite(trial.value):
        return None  # an infinite value is a diverged training, never a reached target
    reached = trial.value >= target if direction == "maximize" else trial.value <= target
    if not reached:
        return None
    sign = ">=" if direction == "maximize" else "<="
    value = f"{metric} {trial.value:.6g} {sign} {target:g}"
    return f"budget.target reached: {value} (trial {trial.number})"
