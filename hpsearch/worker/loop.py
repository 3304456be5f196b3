"""The worker loop: run one trial with a slot of the study-wide budget, repeat.

Each trial runs inside Optuna's own `study.optimize(n_trials=1)`, so heartbeats and the
sampler/pruner lifecycle are Optuna's. What hpsearch adds:

- the study behind one object (`worker.session`): storage, the exact study-wide budget
  (`hpsearch.budget`, claimed in the transaction that starts each trial: `ask()` raises
  `BudgetSpent` when none is left), heartbeats and stop checks;
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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from hpsearch.budget import BudgetSpent, Ledger, Limits
from hpsearch.errors import HpsearchError, StorageError
from hpsearch.objective import TrialContext, UserFunction, WorkerStopped, build
from hpsearch.signals import GracefulStop, stop_on_signals
from hpsearch.spec import Budget, GridSampler, LoadedSpec
from hpsearch.storage import StorageURL, first_line, give_up_after
from hpsearch.storage.attrs import PRUNE_REASON_ATTR, WORKER_ATTR
from hpsearch.worker import launcher, provenance
from hpsearch.worker.session import StudySession, worker_name
from hpsearch.worker.stopping import Failures, describe, storage_cause, storage_failed

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
            _Worker(loaded, url, options, report, stop, on_trial, on_step).run()
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


class _Worker:
    """One worker's run: join the study, then one trial after another (`run`)."""

    def __init__(
        self,
        loaded: LoadedSpec,
        url: StorageURL,
        options: RunOptions,
        report: WorkerReport,
        stop: _Stop,
        on_trial: Callable[[optuna.Study, FrozenTrial, Ledger | None], None] | None,
        on_step: Callable[[optuna.Trial, int, float], None] | None,
    ) -> None:
        self.loaded, self.url, self.options, self.report, self.stop = (
            loaded, url, options, report, stop,
        )  # fmt: skip
        self.on_trial, self.on_step = on_trial, on_step
        self.name = worker_name(options.worker_id)
        heartbeat = loaded.spec.workers.heartbeat_interval
        self.poll = options.linger_poll if options.linger_poll is not None else min(heartbeat, 5.0)

    def run(self) -> None:
        """The loop: a trial while the budget lasts and nobody asked this worker to stop."""
        session = self.join()
        if session is None:
            return
        objective = self.objective(session)
        failures = Failures(session.budget.max_failures)
        linger = _LINGER_FIRST  # seconds until a lingering worker looks at the others again
        stopped: WorkerStopped | None = None  # raised by a signal, or by the objective itself
        try:
            while not self.stop.requested and self.report.stopped_by is None:
                session.fail_stale(every=self.poll)
                if (why := session.why_not_start()) is not None:
                    self.report.budget_reason = why
                    break
                if failures.gave_up is not None:
                    self.report.gave_up = failures.gave_up
                    break
                try:
                    trial = session.run_trial(objective)
                except BudgetSpent:
                    if self.linger(session, linger):
                        linger *= 2
                        continue
                    break
                linger = _LINGER_FIRST
                if trial is not None:
                    failures.add(trial)
                    self.finished(session, trial)
        except WorkerStopped as e:
            stopped = e
        except Exception as e:
            if not self.stop.requested:
                raise
            # The database stayed away while this worker stopped: Optuna could not tell the
            # trial (and its bookkeeping then fails with whatever error). It is failed below if
            # the database is back, or else by another worker once its heartbeat is stale.
            _log.warning("stopping without the database: %s: %s", type(e).__name__, e)
        self.leave(session, stopped)

    def join(self) -> StudySession | None:
        """Create or join the study; None when it was stopped and this run does not resume."""
        options, report, loaded = self.options, self.report, self.loaded
        launcher.wait_for_first(lambda: self.stop.requested)  # `--workers N`: no race
        session = StudySession.open(
            loaded, self.url, worker=self.name, name=options.study_name, budget=options.budget,
            change_budget=options.change_budget, wait=STARTUP_WAIT_SECONDS,
        )  # fmt: skip
        launcher.joined()  # the study and its budget exist: the launcher's others may start
        report.study, report.created = session.study, session.created
        report.study_name = session.study.study_name
        grid = isinstance(loaded.spec.sampler, GridSampler)  # a grid ends by itself
        if Limits.of(session.budget).unlimited and not grid:
            _log.warning(
                "study %r has no budget: it runs until it is stopped (Ctrl-C, SIGTERM); set "
                "budget: {n_trials: N} or another limit in the file", report.study_name
            )  # fmt: skip
        if options.resume:
            if (cleared := session.resume()) is not None:
                _log.warning("study %r resumed (it was %s)", report.study_name, cleared)
        elif (stopped := session.stopped(now=True)) is not None:
            report.stopped_by = stopped
            _log.warning(
                "study %r was stopped: %s; to go on, run `hpsearch run %s --resume`",
                report.study_name, stopped, loaded.path,
            )  # fmt: skip
            return None
        return session

    def objective(self, session: StudySession) -> Callable[[optuna.Trial], Any]:
        """The Optuna objective of this worker's trials: the file's (or the API's) objective,
        watching for a stop, and handing its trial back when this worker is stopped."""
        context = TrialContext(
            artifacts=provenance.artifacts_dir(
                self.loaded, self.url, session.study.study_name, self.options.artifacts
            ),
            attrs={WORKER_ATTR: self.name, **provenance.worker_attrs(self.loaded)},
            observe=self.observer(session),
        )
        if session.database is not None:
            session.database.stamp_trials(context.attrs)  # with each trial's start
        run_trial = build(self.loaded, context, function=self.options.function)
        stop = self.stop

        def objective(trial: optuna.Trial) -> Any:
            session.started(trial)
            stop.in_objective = True
            try:
                if stop.requested:  # the signal came while this trial was being started
                    raise WorkerStopped(f"worker stopped by {stop.by}")
                try:
                    return run_trial(trial)
                finally:
                    session.before_tell(trial)
            except WorkerStopped as stopped:
                stop.in_objective = False
                # Written while the trial still runs: a finished trial's attributes are final.
                session.mark_for_retry(trial, stopped.reason)
                raise
            finally:
                stop.in_objective = False

        return objective

    def observer(self, session: StudySession) -> Callable[[optuna.Trial, int, float], None]:
        """At each reported step: a study stopped for every worker ends this trial here."""
        on_step = self.on_step

        def observe(trial: optuna.Trial, step: int, value: float) -> None:
            if on_step is not None:
                on_step(trial, step, value)
            record = session.stop_record()
            if record is None:
                return
            if record.get("kind") == "target":  # the study is done: end this trial where it is
                trial.set_user_attr(PRUNE_REASON_ATTR, record["reason"])
                raise optuna.TrialPruned(f"the study is done: {record['reason']}")
            raise WorkerStopped(f"study stopped: {describe(record)}")  # handed back: resume

        return observe

    def finished(self, session: StudySession, trial: FrozenTrial) -> None:
        state = trial.state.name
        self.report.trials[state] = self.report.trials.get(state, 0) + 1
        spec = self.loaded.spec
        reached = session.finished(trial, spec.metrics[0], spec.study_directions[0])
        if reached is not None:
            self.report.stopped_by = reached  # this worker stops at once; the others see it
            _log.info("study %r: %s; every worker stops", self.report.study_name, reached)
        if self.on_trial is not None:
            self.on_trial(session.study, trial, session.ledger)

    def linger(self, session: StudySession, wait: float) -> bool:
        """The budget is spent: whether to stay, for a trial that may still need a retry."""
        self.report.budget_reason, closed = session.spent_reason()
        if closed:  # stopped for every worker: nothing here to wait for
            self.report.stopped_by = session.stopped(now=True) or self.report.budget_reason
            return False
        if session.others_running():
            # A crashed trial may still need a retry. Looking again soon at first, since the
            # other trials often end within moments (the end of a study), then every `poll`
            # seconds: no worker exits long after the last.
            pause = min(wait, self.poll)
            _log.debug("budget spent, another trial still running: looking again in %gs", pause)
            _sleep(pause, self.stop)
            return True
        if session.requeue_missing():
            return True  # a stopped worker's trial had no retry yet: run it here
        # A retry queued meanwhile (by the worker that was stopped) still runs here; queued
        # trials nothing can start any more are failed with why, not left WAITING.
        return session.settle_waiting()

    def leave(self, session: StudySession, stopped: WorkerStopped | None) -> None:
        """Hand back the running trial if this worker was stopped; say what it did."""
        report = self.report
        if self.stop.requested or stopped is not None:
            reason = stopped.reason if stopped is not None else f"worker stopped by {self.stop.by}"
            session.hand_back(reason)
        if not report.trials and report.stopped_by is None and report.budget_reason is not None:
            _log.warning(
                "study %r: no trial to run, its budget is already spent (%s); %s; to run more: "
                "hpsearch run %s --n-trials N (a larger N than the study's)",
                report.study_name, report.budget_reason, _summary(session.study, self.loaded),
                self.loaded.path,
            )  # fmt: skip
        done = ", ".join(f"{n} {s.lower()}" for s, n in sorted(report.trials.items()))
        gave_up = report.gave_up and (
            f"budget.max_failures: {session.budget.max_failures} failed trials in a row"
        )
        why = report.stopped_by or gave_up or report.budget_reason or "stopped"
        _log.info("worker %s done: %s (%s)", self.name, done or "no trials", why)
        if stopped is not None and stopped.exit_code:
            raise stopped  # run_worker turns it into the error and exit code


# How long a stopping worker tries to fail and re-queue its trial while the database is away;
# after that the trial stays RUNNING, stops beating, and another worker retries it.
_STOP_SECONDS = 10.0
_LINGER_FIRST = 0.05  # then doubling, up to the poll interval


def _summary(study: optuna.Study, loaded: LoadedSpec) -> str:
    """`12 trials, best loss 0.031 (trial 7)`: what a study that is already done holds."""
    trials = study.get_trials(deepcopy=False)
    try:
        best = study.best_trial if len(loaded.spec.study_directions) == 1 else None
    except ValueError:  # no completed trial
        best = None
    if best is None or best.value is None:
        return f"{len(trials)} trials"
    metric = loaded.spec.metrics[0]
    return f"{len(trials)} trials, best {metric} {best.value:.6g} (trial {best.number})"


def _sleep(seconds: float, stop: _Stop) -> None:
    """Sleep, waking early for a stop signal (the handler does not raise outside a trial)."""
    end = time.monotonic() + seconds
    while not stop.requested and time.monotonic() < end:
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))
