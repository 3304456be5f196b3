"""A worker's connection to its study: storage, budget, heartbeats and stop checks, in one object.

`StudySession.open` opens the storage (waiting for a database that is restarting), creates or
joins the study, and attaches the study-wide budget; the worker loop and the Python API then
only ask it questions. Behind it hides the one difference between the two kinds of storage:

- a SQL database: the budget's ledger is claimed in the transaction that starts each trial
  (`ask()` raises `BudgetSpent` when none is left), heartbeats mark live trials, and a trial is
  failed and queued again in transactions of hpsearch's own (`ResilientRDBStorage`);
- Optuna's gRPC proxy, which runs no statement of ours: the budget is counted between trials
  (`budget.trials_started`, which may overshoot by one trial per worker) and there are no
  heartbeats.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from hpsearch.budget import Ledger, Limits, counts_as_new_trial, gpu_seconds, target_reached
from hpsearch.budget import trials_started as count_started
from hpsearch.spec import Budget, LoadedSpec
from hpsearch.storage import STORAGE_ERRORS, ResilientRDBStorage, StorageURL, open_storage
from hpsearch.storage import refuse_sqlite_across_machines as refuse_sqlite
from hpsearch.storage.attrs import FAIL_REASON_ATTR
from hpsearch.storage.optuna_compat import forget_finished, study_id, told_trial, trial_id
from hpsearch.study import check_requirements, create_or_load
from hpsearch.worker.retry_policy import (
    RetryPolicy,
    retry_interrupted,
    retry_interrupted_elsewhere,
)
from hpsearch.worker.stopping import (
    StopWatch,
    describe,
    grid_exhausted,
    refuse_other_hosts,
    resume,
    stop_study,
)

_log = logging.getLogger(__name__)


@dataclass
class StudySession:
    """One worker's study, its budget, and what the worker asks of them between trials."""

    study: optuna.Study
    created: bool
    budget: Budget  # the study's budget, as stored (a joiner's may differ from its file's)
    storage: BaseStorage
    ledger: Ledger | None  # None: the gRPC proxy (the budget counted between trials)
    worker: str
    policy: RetryPolicy
    watch: StopWatch
    current: int | None = None  # the trial this worker runs now (its storage id)
    _last_stale_check: float = field(default=-float("inf"), repr=False)

    @classmethod
    def open(
        cls,
        loaded: LoadedSpec,
        url: StorageURL,
        *,
        worker: str,
        name: str | None = None,
        budget: Budget | None = None,
        change_budget: bool = False,
        wait: float = 0.0,
    ) -> StudySession:
        """Create or join the study with its budget attached: every trial started through it
        claims a slot, whoever calls `ask()` (the worker, `study.optimize`, a notebook)."""
        spec = loaded.spec
        check_requirements(loaded)  # before any trial: a study that cannot succeed says so now
        policy = RetryPolicy(spec.workers.max_retries)
        storage = open_storage(
            url,
            heartbeat_interval=spec.workers.heartbeat_interval if url.kind != "grpc" else None,
            grace_period=spec.workers.grace_seconds,
            stale_callback=policy,
            wait=wait,
        )
        joined = create_or_load(
            loaded, storage, name=name, worker=worker, budget=budget, change_budget=change_budget
        )
        study = joined.study
        if url.kind == "sqlite":
            refuse_sqlite(url)
            refuse_other_hosts(study, url)
        ledger = None
        if isinstance(storage, ResilientRDBStorage):
            ledger = Ledger(storage.engine, study_id(study), uid=joined.uid,
                            retrying=storage.retried)  # fmt: skip
            limits = Limits.of(joined.budget)
            if joined.created or joined.budget_changed:
                ledger.set_limits(limits)
            else:
                ledger.ensure(limits)  # the study's budget, as stored; made here if missing
            storage.use_budget(study_id(study), ledger)
            storage.on_revive.append(lambda revived: forget_finished(study, revived))
        return cls(study, joined.created, joined.budget, storage, ledger, worker, policy,
                   StopWatch(study))  # fmt: skip

    @property
    def database(self) -> ResilientRDBStorage | None:
        """The SQL storage, with hpsearch's transactions; None behind the gRPC proxy."""
        return self.storage if isinstance(self.storage, ResilientRDBStorage) else None

    # --- stopping for every worker: `hpsearch stop`, `--resume`, the target -----------------

    def stopped(self, *, now: bool = False) -> str | None:
        """Why the study was stopped for every worker, if it was (a query, at most every 2 s
        unless `now`)."""
        record = self.watch.check(now=now)
        return describe(record) if record is not None else None

    def stop_record(self) -> dict[str, Any] | None:
        """During a trial: the study's stop record, if any (rate-limited like `stopped`)."""
        return self.watch.check()

    def resume(self) -> str | None:
        """Clear the study's stop (`run --resume`); returns what it was, if anything."""
        cleared = resume(self.study, by=self.worker, ledger=self.ledger)
        return describe(cleared) if cleared is not None else None

    # --- between trials -----------------------------------------------------------------

    def fail_stale(self, every: float) -> None:
        """Fail (and queue again) the trials whose worker stopped beating, at most every
        `every` seconds: a trial is stale only after the grace period, so more often finds
        nothing new."""
        database = self.database
        if database is None or not database.get_heartbeat_interval():
            return
        if time.monotonic() - self._last_stale_check >= every:
            self.policy.fail_stale(self.study, database)
            self._last_stale_check = time.monotonic()

    def why_not_start(self) -> str | None:
        """Why no further trial starts here, known before asking for one; None: ask."""
        if self.ledger is None:
            limit = self.budget.n_trials
            if limit is not None and count_started(self.study.get_trials(deepcopy=False)) >= limit:
                return "n_trials reached"
            # The ledger's claim refuses a stopped study; behind the proxy only a look does.
            if (stopped := self.stopped(now=True)) is not None:
                return stopped
        return grid_exhausted(self.study)

    def run_trial(self, objective: Any) -> FrozenTrial | None:
        """Run one trial through Optuna's `optimize` (its heartbeats, sampler and pruner
        lifecycle); the finished trial, or None when none ran here.

        Raises:
            BudgetSpent: no slot was left for a new trial.
        """
        before = self.current
        try:
            # Not `callbacks=[...]`: Optuna reads the finished trial for a callback in a way
            # that the next ask() reads it again (`told_trial`).
            self.study.optimize(objective, n_trials=1, catch=(Exception,))
        except (ValueError, UpdateFinishedTrialError) as e:
            if not _taken_away(e):
                raise
            # Another worker judged this trial stale (this one could not reach the database
            # for longer than the grace period) and retries it.
            _log.warning("the trial was failed as stale meanwhile; its retry redoes it: %s", e)
            return None
        if self.current is None or self.current == before:
            return None
        return told_trial(self.study, self.current)

    def started(self, trial: optuna.Trial) -> None:
        """The objective was called for `trial` (the one a signal hands back)."""
        self.current = trial_id(trial)

    def before_tell(self, trial: optuna.Trial) -> None:
        """The objective is done: if another worker failed the trial as stale meanwhile (this
        worker starved of CPU, or cut from the database, for longer than the grace period),
        revive it so that its result is recorded, not lost (`TrialFates.keep_alive`)."""
        if self.database is not None:
            self.database.keep_alive(trial_id(trial))

    def finished(self, trial: FrozenTrial, spec_metric: str, direction: str) -> str | None:
        """Count a finished trial against the budget; why the study is done, if it now is."""
        if self.ledger is not None and self.budget.gpu_hours is not None:
            self.ledger.spend_gpu_seconds(gpu_seconds(trial))
        reached = target_reached(self.budget.target, direction, spec_metric, trial)
        if reached is not None:
            stop_study(
                self.study, reason=reached, kind="target", by=self.worker, ledger=self.ledger
            )  # from this commit on, no trial starts anywhere
        return reached

    def spent_reason(self) -> tuple[str | None, bool]:
        """After `BudgetSpent`: what is spent (the ledger says), and whether the study was
        closed for every worker (stopped, or its target reached) rather than used up."""
        state = self.ledger.state() if self.ledger is not None else None
        if state is None:
            return None, False
        return state.spent_reason(time.time()), state.closed is not None

    def others_running(self) -> bool:
        return bool(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def requeue_missing(self) -> bool:
        """Queue the retry of a stopped or crashed worker's trial that has none; True if any."""
        database = self.database
        if database is None or not database.get_heartbeat_interval():
            return False
        return self.policy.requeue_missing(self.study)

    def settle_waiting(self) -> bool:
        """The budget is spent for new trials: fail each queued trial that can never start,
        with why; True when one can still start (a retry takes no slot of `n_trials`, and
        may have been queued since this worker last asked)."""
        database, ledger = self.database, self.ledger
        if database is None or ledger is None or (state := ledger.state()) is None:
            return False
        startable, failed, now = False, 0, time.time()
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            reason = state.refuses(now, new_trial=counts_as_new_trial(trial.system_attrs))
            if reason is None:
                startable = True
            elif database.fail_waiting(trial_id(trial), reason):
                failed += 1
        if failed:
            _log.warning("%d queued trial(s) failed: the budget is spent", failed)
        return startable

    # --- handing a trial back -------------------------------------------------------------

    def mark_for_retry(self, trial: optuna.Trial, reason: str) -> None:
        """Inside the objective: the running trial ends FAIL and is to be retried elsewhere."""
        try:
            if self.database is not None:
                self.database.mark_for_retry(trial_id(trial), reason, cause="stop")
            else:
                trial.set_user_attr(FAIL_REASON_ATTR, reason)
        except STORAGE_ERRORS as e:
            _log.warning("trial %d not marked for a retry: %s", trial.number, e)

    def hand_back(self, reason: str) -> None:
        """This worker stops: fail its running trial (if any) and queue it again."""
        if self.database is not None:
            retry_interrupted(self.study, self.database, self.policy, reason)
        elif self.current is not None:
            retry_interrupted_elsewhere(self.study, self.current, self.policy, reason)


def worker_name(worker_id: str) -> str:
    """`host:pid#id`: how trials, logs and `hpsearch status` name a worker."""
    return f"{socket.gethostname()}:{os.getpid()}#{worker_id}"


def _taken_away(error: Exception) -> bool:
    """Whether Optuna failed to tell a trial because another worker had failed it already."""
    return isinstance(error, UpdateFinishedTrialError) or str(error).startswith("Cannot tell a")
