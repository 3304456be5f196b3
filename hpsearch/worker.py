"""The worker loop: claim a slot of the study-wide budget, run one trial, repeat.

Each trial runs inside Optuna's own `study.optimize(n_trials=1)`, so heartbeats, stale-trial
failing and the sampler/pruner lifecycle are Optuna's. What hpsearch adds:

- an exact study-wide budget (`hpsearch.budget`), claimed before each trial;
- SIGTERM/SIGINT: the running trial ends FAIL and is queued again for another worker, then the
  worker exits 0; a second signal exits at once;
- a retry policy for trials whose worker died: bounded, and never for a trial that killed two
  different workers (a deterministic crash);
- lingering while other workers' trials still run, so that a crash at the end of a study is
  still retried by someone.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hpsearch import provenance
from hpsearch.budget import Ledger, Limits
from hpsearch.errors import HpsearchError, StorageError
from hpsearch.objective import TrialContext, WorkerStopped, build
from hpsearch.resilient import ResilientRDBStorage
from hpsearch.spec import LoadedSpec
from hpsearch.storage import StorageURL, open_storage, refuse_sqlite_across_machines
from hpsearch.study import create_or_load

_log = logging.getLogger(__name__)

STOP_EXIT_CODE = 0
FORCED_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a killed process


@dataclass
class WorkerReport:
    """What one worker did, for its last log line and for tests."""

    study_name: str
    created: bool
    trials: dict[str, int] = field(default_factory=dict)
    stopped_by: str | None = None
    budget_reason: str | None = None


class RetryPolicy:
    """Optuna's stale-trial retry, plus a budget slot for the retry and a deterministic-crash rule.

    The retry is the trial Optuna's `RetryHeartbeatStaleTrialCallback` would add (same params,
    `failed_trial` and `retry_history` system attributes, so Optuna's helpers read it), made here
    because that callback cannot skip a deterministic crash or add a budget slot.

    Given to the storage as `heartbeat_stale_trial_callback`; `fail_stale_trials` (run by Optuna
    before each trial) calls it for each trial whose worker stopped sending heartbeats.
    """

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries
        self.ledger: Ledger | None = None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.retry(study, trial, crashed=True)

    def fail_stale(self, study: optuna.Study, storage: ResilientRDBStorage) -> None:
        """Optuna's `fail_stale_trials`, but recording why on the trial before it is closed.

        A finished trial's attributes are read-only, so the reason is written while the trial
        is still RUNNING; of several workers doing this at once, the one whose state change
        wins queues the retry.
        """
        for trial_id in storage.stale_trial_ids(study._study_id):
            trial = storage.get_trial(trial_id)
            worker = trial.user_attrs.get("worker", "?")
            reason = f"worker {worker} stopped sending heartbeats (killed, preempted or lost)"
            try:
                storage.set_trial_user_attr(trial_id, "fail_reason", reason)
                if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker got there first
            _log.warning("trial %d: %s", trial.number, reason)
            self.retry(study, storage.get_trial(trial_id), crashed=True)

    def retry(self, study: optuna.Study, trial: FrozenTrial, *, crashed: bool) -> bool:
        """Queue `trial` again with the same parameters; False when the policy says no."""
        history = list(trial.system_attrs.get("retry_history", []))
        crashed_workers = list(trial.user_attrs.get("crashed_workers", []))
        worker = trial.user_attrs.get("worker")
        if crashed and worker is not None and crashed_workers and worker not in crashed_workers:
            _log.warning(
                "trial %d crashed workers %s and %s: a deterministic failure, not retried",
                trial.number,
                crashed_workers[-1],
                worker,
            )
            return False
        if len(history) >= self.max_retries:
            _log.warning(
                "trial %d: %d retries used, not retried again", trial.number, len(history)
            )
            return False
        if self.ledger is not None:
            self.ledger.add_retry_slot()
        attrs = dict(trial.user_attrs)
        attrs.pop("fail_reason", None)
        if crashed and worker is not None:
            attrs["crashed_workers"] = [*crashed_workers, worker]
        retry_trial = optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=attrs,
            system_attrs={
                **trial.system_attrs,
                "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                "retry_history": [*history, trial.number],
            },
        )
        study.add_trial(retry_trial)
        _log.info("trial %d queued again (retry %d)", trial.number, len(history) + 1)
        return True


@contextmanager
def _graceful_signals(report: WorkerReport) -> Iterator[None]:
    """First SIGTERM/SIGINT: raise WorkerStopped (trial fails, is retried); second: exit now."""

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if report.stopped_by is not None:
            _log.warning("second %s: exiting now", name)
            os._exit(FORCED_EXIT_CODE)
        report.stopped_by = name
        _log.warning("%s: stopping after failing the running trial for a retry", name)
        raise WorkerStopped(f"worker stopped by {name}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_worker(
    loaded: LoadedSpec,
    url: StorageURL,
    *,
    limits: Limits,
    study_name: str | None = None,
    worker_id: str = "0",
    artifacts: str | None = None,
    on_trial: Callable[[optuna.Study, FrozenTrial, Ledger | None], None] | None = None,
    linger_poll: float | None = None,
) -> WorkerReport:
    """Join (or create) the study and run trials until the budget is spent or a signal arrives."""
    spec = loaded.spec
    policy = RetryPolicy(spec.workers.max_retries)
    storage = open_storage(
        url,
        heartbeat_interval=spec.workers.heartbeat_interval if url.kind != "grpc" else None,
        grace_period=spec.workers.grace_seconds,
        stale_callback=policy,
    )
    worker = f"{socket.gethostname()}:{os.getpid()}#{worker_id}"
    study, created = create_or_load(loaded, storage, name=study_name, worker=worker)
    if url.kind == "sqlite":
        refuse_sqlite_across_machines(url)
        _refuse_other_hosts(study, url)
    ledger = None
    if isinstance(storage, RDBStorage):
        ledger = Ledger(storage.engine, study._study_id)
        ledger.set_limits(limits)
        policy.ledger = ledger
    report = WorkerReport(study.study_name, created)
    context = TrialContext(
        artifacts=provenance.artifacts_dir(loaded, url, study.study_name, artifacts),
        attrs={"worker": worker, **provenance.worker_attrs(loaded)},
    )
    run_trial = build(loaded, context)
    current: list[int] = []  # the id of the trial this worker runs now, for a signal

    def objective(trial: optuna.Trial) -> float | list[float]:
        current[:] = [trial._trial_id]
        try:
            return run_trial(trial)
        except WorkerStopped as stopped:
            # Written while the trial still runs: a finished trial's attributes are read-only.
            trial.set_user_attr("fail_reason", stopped.reason)
            raise

    poll = linger_poll if linger_poll is not None else min(spec.workers.heartbeat_interval, 5.0)

    def record(study: optuna.Study, trial: FrozenTrial) -> None:
        state = trial.state.name
        report.trials[state] = report.trials.get(state, 0) + 1
        if ledger is not None and limits.gpu_hours is not None and trial.duration is not None:
            ledger.spend_gpu_seconds(trial.duration.total_seconds())  # one device per worker
        if on_trial is not None:
            on_trial(study, trial, ledger)

    heartbeat = isinstance(storage, ResilientRDBStorage) and bool(storage.get_heartbeat_interval())
    last_stale_check = -float("inf")
    with _graceful_signals(report):
        try:
            while True:
                if heartbeat and time.monotonic() - last_stale_check >= poll:
                    # A trial is stale only after `grace_period`, so checking more often than
                    # every few seconds finds nothing new; fast trials skip the query.
                    policy.fail_stale(study, storage)  # type: ignore[arg-type]
                    last_stale_check = time.monotonic()
                if ledger is not None and not ledger.claim():
                    state = ledger.state()
                    report.budget_reason = state.spent_reason(time.time()) if state else None
                    if _others_running(study) and isinstance(storage, RDBStorage):
                        time.sleep(poll)  # linger: a crashed trial may still need a retry
                        continue
                    break
                if ledger is None and _count_done(study) >= (limits.n_trials or float("inf")):
                    report.budget_reason = "n_trials reached"
                    break
                study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[record])
        except WorkerStopped as stopped:
            if current:
                _retry_interrupted(study, current[0], policy, stopped.reason)
            if stopped.exit_code:
                raise HpsearchError(stopped.reason) from None
    _log.info(
        "worker %s done: %s%s",
        worker,
        ", ".join(f"{n} {s.lower()}" for s, n in sorted(report.trials.items())) or "no trials",
        f" ({report.stopped_by})" if report.stopped_by else f" ({report.budget_reason})",
    )
    return report


def _refuse_other_hosts(study: optuna.Study, url: StorageURL) -> None:
    """A SQLite study that already has trials from another host is shared across machines."""
    here = socket.gethostname()
    for trial in study.get_trials(deepcopy=False):
        host = trial.user_attrs.get("host")
        if host is not None and host != here:
            raise StorageError(
                f"storage {url.redacted} is SQLite, but trial {trial.number} ran on host "
                f"{host!r} and this is {here!r}: SQLite serves one machine. Use a PostgreSQL or "
                "MySQL server for workers on several machines (--storage postgresql+psycopg://...)"
            )


def _others_running(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def _count_done(study: optuna.Study) -> int:
    """Trials started, for storages without a ledger (the gRPC proxy): may overshoot."""
    return len(study.get_trials(deepcopy=False)) - sum(
        1 for t in study.get_trials(deepcopy=False) if "failed_trial" in t.system_attrs
    )


def _retry_interrupted(
    study: optuna.Study, trial_id: int, policy: RetryPolicy, reason: str
) -> None:
    """Queue again the trial this worker was running when it was told to stop."""
    storage = study._storage
    trial = storage.get_trial(trial_id)
    if trial.state == TrialState.RUNNING:  # the signal came outside the objective
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    elif trial.state != TrialState.FAIL or trial.user_attrs.get("fail_reason") != reason:
        return  # it finished, or failed on its own, before the signal: nothing to retry
    policy.retry(study, storage.get_trial(trial_id), crashed=False)
