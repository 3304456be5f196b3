"""The worker loop: run one trial with a slot of the study-wide budget, repeat.

Each trial runs inside Optuna's own `study.optimize(n_trials=1)`, so heartbeats and the
sampler/pruner lifecycle are Optuna's. What hpsearch adds:

- an exact study-wide budget (`worker.budget`), claimed in the transaction that starts each
  trial (`ask()` raises `BudgetSpent` when none is left);
- SIGTERM/SIGINT: the running trial ends FAIL and is queued again for another worker, then the
  worker exits 0; a second signal exits at once;
- a retry policy for trials whose worker died: exactly one retry per such trial, bounded, and
  not for a trial that kills its worker again at the same step (a failure of the trial);
- lingering while other workers' trials still run, so that a crash at the end of a study is
  still retried by someone.

Every step that must survive a kill or a database restart at any moment is one transaction in
`storage.resilient`; `benchmarks/chaos.py` kills workers and the database at random to check.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import HpsearchError, StorageError
from hpsearch.objective import TrialContext, UserFunction, WorkerStopped, build
from hpsearch.signals import GracefulStop, stop_on_signals
from hpsearch.spec import Budget, GridSampler, LoadedSpec
from hpsearch.storage import (
    STORAGE_ERRORS,
    ResilientRDBStorage,
    StorageURL,
    first_line,
    give_up_after,
    open_storage,
    refuse_sqlite_across_machines,
)
from hpsearch.storage.optuna_compat import study_id, told_trial, trial_id
from hpsearch.study import check_requirements, create_or_load
from hpsearch.worker import launcher, provenance
from hpsearch.worker.budget import BudgetSpent, Ledger, Limits
from hpsearch.worker.retry_policy import (
    RetryPolicy,
    retry_interrupted,
    retry_interrupted_elsewhere,
)
from hpsearch.worker.stopping import (
    Failures,
    StopWatch,
    describe,
    exit_reason,
    grid_exhausted,
    refuse_other_hosts,
    resume,
    stop_study,
    storage_cause,
    storage_failed,
    target_reached,
)

_log = logging.getLogger(__name__)
# A worker started while its database is down (a restart, a failover) waits this long for it.
STARTUP_WAIT_SECONDS = 120.0


@dataclass
class WorkerReport:
    """What one worker did, for its last log line and for tests."""

    study_name: str
    created: bool
    trials: dict[str, int] = field(default_factory=dict)
    stopped_by: str | None = None
    budget_reason: str | None = None
    gave_up: str | None = None  # why it stopped after failures in a row
    study: optuna.Study | None = None  # the study it ran (for the Python API)

    @property
    def ran(self) -> int:
        return sum(self.trials.values())

    @property
    def succeeded(self) -> int:
        """Trials that ran to a result: completed, or stopped early by the pruner."""
        return self.trials.get("COMPLETE", 0) + self.trials.get("PRUNED", 0)


@dataclass(frozen=True)
class RunOptions:
    """How `hpsearch run` asks this worker to run (the study file says the rest)."""

    budget: Budget | None = None  # the file's budget with the run's flags; None: the file's
    change_budget: bool = False  # a joiner may change the study's budget to `budget`
    study_name: str | None = None
    worker_id: str = "0"
    artifacts: str | None = None
    linger_poll: float | None = None  # tests: how often a finished worker looks at the others
    resume: bool = False  # clear the study's stop record (`hpsearch stop`) and go on
    function: UserFunction | None = None  # the Python API's objective, instead of the file's


class _Stop:
    """The signal that asked this worker to stop (if any), and whether a trial is running."""

    def __init__(self) -> None:
        self.signals = GracefulStop()
        self.in_objective = False

    @property
    def by(self) -> str | None:
        return self.signals.by

    @property
    def requested(self) -> bool:
        return self.signals.requested


@contextmanager
def _graceful_signals(report: WorkerReport) -> Iterator[_Stop]:
    """First SIGTERM/SIGINT: stop after the running trial is failed and queued again.

    Inside the objective the handler raises WorkerStopped; anywhere else (in the middle of a
    storage call, or of Optuna's bookkeeping around the objective) it only records the request,
    and the worker loop stops at its next step, so the trial just told or just started is not
    left half-done. Storage calls stop retrying after `_STOP_SECONDS`, so the stop is bounded even
    while the database is away. A second signal exits at once.
    """
    stop = _Stop()

    def first(name: str) -> None:
        report.stopped_by = name
        _log.warning("%s: stopping after failing the running trial for a retry", name)
        # From now on a call that finds no database gives up after a few seconds: the trial is
        # then left to stop beating, and another worker fails and retries it.
        give_up_after(_STOP_SECONDS)
        if stop.in_objective:
            raise WorkerStopped(f"worker stopped by {name}")

    with stop_on_signals(first) as signals:
        stop.signals = signals
        yield stop


def run_worker(
    loaded: LoadedSpec,
    url: StorageURL,
    options: RunOptions | None = None,
    *,
    on_trial: Callable[[optuna.Study, FrozenTrial, Ledger | None], None] | None = None,
    on_step: Callable[[optuna.Trial, int, float], None] | None = None,
) -> WorkerReport:
    """Join (or create) the study and run trials until the budget is spent or a signal arrives.

    Raises:
        HpsearchError: the study cannot go on here (a device that fits nothing, trials that
            fail again and again); one line saying why.
    """
    options = options or RunOptions()
    report = WorkerReport(options.study_name or loaded.spec.name, created=False)
    with _graceful_signals(report) as stop:
        try:
            _run(loaded, url, options, report, stop, on_trial, on_step)
        except WorkerStopped as stopped:
            if stopped.exit_code:
                raise HpsearchError(stopped.reason) from None
        except StorageError as e:
            if not stop.requested:
                raise
            _log.warning("stopped by %s before joining the study: %s", stop.by, e)
        except HpsearchError:
            raise  # says what is wrong already (whatever it was raised while handling)
        except Exception as e:
            # A database error the retries could not ride out, maybe under another (Optuna's
            # bookkeeping fails with an AssertionError when its `tell` could not be written).
            cause = storage_cause(e)
            if cause is None:
                raise
            if not stop.requested:
                raise StorageError(storage_failed(url, cause)) from None
            _log.warning("stopped by %s before joining the study: %s", stop.by, first_line(cause))
    if report.gave_up:
        raise HpsearchError(report.gave_up)
    return report


def _run(
    loaded: LoadedSpec,
    url: StorageURL,
    options: RunOptions,
    report: WorkerReport,
    stop: _Stop,
    on_trial: Callable[[optuna.Study, FrozenTrial, Ledger | None], None] | None,
    on_step: Callable[[optuna.Trial, int, float], None] | None,
) -> None:
    spec = loaded.spec
    check_requirements(loaded)  # before any trial: a study that cannot succeed says so now
    policy = RetryPolicy(spec.workers.max_retries)
    storage = open_storage(
        url,
        heartbeat_interval=spec.workers.heartbeat_interval if url.kind != "grpc" else None,
        grace_period=spec.workers.grace_seconds,
        stale_callback=policy,
        wait=STARTUP_WAIT_SECONDS,
    )
    worker = f"{socket.gethostname()}:{os.getpid()}#{options.worker_id}"
    launcher.wait_for_first(lambda: stop.requested)  # started by `--workers N`: no race
    joined = create_or_load(
        loaded, storage, name=options.study_name, worker=worker, budget=options.budget,
        change_budget=options.change_budget,
    )  # fmt: skip
    study, report.created = joined.study, joined.created
    report.study_name = study.study_name
    if url.kind == "sqlite":
        refuse_sqlite_across_machines(url)
        refuse_other_hosts(study, url)
    limits = Limits.of(joined.budget)
    if limits == Limits() and not isinstance(spec.sampler, GridSampler):  # a grid ends
        _log.warning(
            "study %r has no budget: it runs until it is stopped (Ctrl-C, SIGTERM); set "
            "budget: {n_trials: N} or another limit in the file", study.study_name
        )  # fmt: skip
    resilient = storage if isinstance(storage, ResilientRDBStorage) else None
    ledger = None
    if resilient is not None:
        ledger = Ledger(
            resilient.engine, study_id(study), uid=joined.uid, max_wait=resilient.max_wait
        )
        if joined.created or joined.budget_changed:
            ledger.set_limits(limits)
        else:
            ledger.ensure(limits)  # the study's budget, as stored; made here if missing
        resilient.use_budget(study_id(study), ledger)  # a slot is claimed with each trial
    launcher.joined()  # the study and its budget exist: the launcher's other workers may start
    watch = StopWatch(study)
    if options.resume:
        cleared = resume(study, by=worker)
        if cleared is not None:
            _log.warning("study %r resumed (it was %s)", study.study_name, describe(cleared))
    elif (stopped_before := watch.check(now=True)) is not None:
        report.stopped_by = describe(stopped_before)
        _log.warning(
            "study %r was stopped: %s; to go on, run `hpsearch run %s --resume`",
            study.study_name, report.stopped_by, loaded.path,
        )  # fmt: skip
        return

    def observe(trial: optuna.Trial, step: int, value: float) -> None:
        if on_step is not None:
            on_step(trial, step, value)
        record = watch.check()
        if record is None:
            return
        if record.get("kind") == "target":  # the study is done: end this trial where it is
            trial.set_user_attr("prune_reason", record["reason"])
            raise optuna.TrialPruned(f"the study is done: {record['reason']}")
        raise WorkerStopped(f"study stopped: {describe(record)}")  # handed back for a resume

    context = TrialContext(
        artifacts=provenance.artifacts_dir(loaded, url, study.study_name, options.artifacts),
        attrs={"worker": worker, **provenance.worker_attrs(loaded)},
        observe=observe,
    )
    if resilient is not None:
        resilient.stamp_trials(context.attrs)  # with each trial's start, not a write of their own
    run_trial = build(loaded, context, function=options.function)
    report.study = study

    current: list[int] = []  # the trial this worker runs now, for storages without `taken`

    def objective(trial: optuna.Trial) -> float | list[float]:
        current[:] = [trial_id(trial)]
        stop.in_objective = True
        try:
            if stop.requested:  # the signal came while this trial was being started
                raise WorkerStopped(f"worker stopped by {stop.by}")
            return run_trial(trial)
        except WorkerStopped as stopped:
            stop.in_objective = False
            # Written while the trial still runs: a finished trial's attributes are read-only.
            try:
                if resilient is not None:
                    resilient.mark_for_retry(trial_id(trial), stopped.reason, cause="stop")
                else:
                    trial.set_user_attr("fail_reason", stopped.reason)
            except STORAGE_ERRORS as e:
                _log.warning("trial %d not marked for a retry: %s", trial.number, e)
            raise
        finally:
            stop.in_objective = False

    poll = options.linger_poll
    if poll is None:
        poll = min(spec.workers.heartbeat_interval, 5.0)
    failures = Failures(joined.budget.max_failures)

    def record(study: optuna.Study, trial: FrozenTrial) -> None:
        state = trial.state.name
        report.trials[state] = report.trials.get(state, 0) + 1
        if ledger is not None and limits.gpu_hours is not None and trial.duration is not None:
            ledger.spend_gpu_seconds(trial.duration.total_seconds())  # one device per worker
        failures.add(trial)
        reached = target_reached(
            joined.budget.target, spec.study_directions[0], spec.metrics[0], trial
        )
        if reached is not None:
            stop_study(study, reason=reached, kind="target", by=worker)
            report.stopped_by = reached  # this worker stops at once; the others see the record
            _log.info("study %r: %s; every worker stops", study.study_name, reached)
        if on_trial is not None:
            on_trial(study, trial, ledger)

    heartbeat = resilient is not None and bool(resilient.get_heartbeat_interval())
    last_stale_check = -float("inf")
    linger = _LINGER_FIRST  # seconds until a lingering worker looks at the others again
    stopped: WorkerStopped | None = None  # raised by a signal, or by the objective itself
    try:
        while not stop.requested and report.stopped_by is None:
            if heartbeat and time.monotonic() - last_stale_check >= poll:
                # A trial is stale only after `grace_period`, so checking more often than
                # every few seconds finds nothing new; fast trials skip the query.
                policy.fail_stale(study, resilient)  # type: ignore[arg-type]
                last_stale_check = time.monotonic()
            if ledger is None and _count_done(study) >= (limits.n_trials or float("inf")):
                report.budget_reason = "n_trials reached"
                break
            if failures.gave_up is not None:
                report.gave_up = failures.gave_up
                break
            if (stopped_now := watch.check()) is not None:  # at most every 2 s: a query
                report.stopped_by = describe(stopped_now)
                break
            exhausted = grid_exhausted(study)
            if exhausted is not None:
                report.budget_reason = exhausted
                break
            ran_before = current[:]
            try:
                # Not `callbacks=[record]`: Optuna reads the finished trial for a callback in a
                # way that the next ask() reads it again (`told_trial`).
                study.optimize(objective, n_trials=1, catch=(Exception,))
            except BudgetSpent:
                assert ledger is not None
                state = ledger.state()
                report.budget_reason = state.spent_reason(time.time()) if state else None
                if _others_running(study):
                    # Linger: a crashed trial may still need a retry. Looking again soon at
                    # first, since the other trials often end within moments (the end of a
                    # study), then every `poll` seconds: no worker exits long after the last.
                    _sleep(min(linger, poll), stop)
                    linger *= 2
                    continue
                if heartbeat and policy.requeue_missing(study):
                    continue  # a stopped worker's trial had no retry yet: run it here
                break
            except (ValueError, UpdateFinishedTrialError) as e:
                if not _taken_away(e):
                    raise
                # Another worker judged this trial stale (this one could not reach the
                # database for longer than the grace period) and retries it.
                _log.warning("the trial was failed as stale meanwhile; its retry redoes it: %s", e)
            else:
                linger = _LINGER_FIRST
                if current != ran_before:  # a trial ran and was told
                    record(study, told_trial(study, current[0]))
    except WorkerStopped as e:
        stopped = e
    except Exception as e:
        if not stop.requested:
            raise
        # The database stayed away while this worker stopped: Optuna could not tell the trial
        # (and its bookkeeping then fails with whatever error). It is failed below if the
        # database is back, or else by another worker once its heartbeat is stale.
        _log.warning("stopping without the database: %s: %s", type(e).__name__, e)
    if stop.requested or stopped is not None:
        reason = stopped.reason if stopped is not None else f"worker stopped by {stop.by}"
        if resilient is not None:
            retry_interrupted(study, resilient, policy, reason)
        elif current:
            retry_interrupted_elsewhere(study, current[0], policy, reason)
    _log.info(
        "worker %s done: %s (%s)",
        worker,
        ", ".join(f"{n} {s.lower()}" for s, n in sorted(report.trials.items())) or "no trials",
        exit_reason(report.stopped_by, report.gave_up, stop.by, report.budget_reason),
    )
    if stopped is not None and stopped.exit_code:
        raise stopped  # run_worker turns it into the error and exit code


# How long a stopping worker tries to fail and re-queue its trial while the database is away;
# after that the trial stays RUNNING, stops beating, and another worker retries it.
_STOP_SECONDS = 10.0
_LINGER_FIRST = 0.05  # then doubling, up to the poll interval


def _others_running(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def _count_done(study: optuna.Study) -> int:
    """Trials started, for storages without a ledger (the gRPC proxy): may overshoot."""
    # A retry takes its crashed trial's place; reading the trials once per check, not twice.
    return sum(1 for t in study.get_trials(deepcopy=False) if "failed_trial" not in t.system_attrs)


def _sleep(seconds: float, stop: _Stop) -> None:
    """Sleep, waking early for a stop signal (the handler does not raise outside a trial)."""
    end = time.monotonic() + seconds
    while not stop.requested and time.monotonic() < end:
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))


def _taken_away(error: Exception) -> bool:
    """Whether Optuna failed to tell a trial because another worker had failed it already."""
    return isinstance(error, UpdateFinishedTrialError) or str(error).startswith("Cannot tell a")
