"""Which trials run again after their worker died or was stopped, and exactly once each."""

from __future__ import annotations

import logging

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.budget import RETRY_HISTORY
from hpsearch.storage import RETRY_ATTR, STORAGE_ERRORS, ResilientRDBStorage
from hpsearch.storage.attrs import (
    CRASH_STEPS_ATTR,
    CRASHED_WORKERS_ATTR,
    FAIL_REASON_ATTR,
    FAILED_TRIAL_ATTR,
    WORKER_ATTR,
)
from hpsearch.storage.optuna_compat import storage_backend, study_id, study_storage

_log = logging.getLogger(__name__)


class RetryPolicy:
    """Optuna's stale-trial retry, made exact under crashes, and a rule for trials that crash.

    The retry is the trial Optuna's `RetryHeartbeatStaleTrialCallback` would add (same params,
    `failed_trial` and `retry_history` system attributes, so Optuna's helpers read it), made here
    because that callback cannot skip a deterministic crash, and runs in a separate transaction
    from the fail (a worker killed between the two would lose the retry).

    A trial that fails because of its worker (heartbeats stopped, or a signal) is failed with a
    retry mark in the same transaction (`ResilientRDBStorage.fail_trial`); `requeue_missing`
    then queues a retry for every marked trial that has none, at most one per trial. Whoever
    runs it (the worker that failed the trial, or any other later) and however often, each such
    trial is retried exactly once, or is refused by the policy.
    """

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries
        self._refused: set[int] = set()  # trial numbers already refused (logged once)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.retry(study, trial, crashed=True)

    def fail_stale(self, study: optuna.Study, storage: ResilientRDBStorage) -> None:
        """Fail the trials whose worker stopped sending heartbeats, then queue their retries."""
        for trial_id in storage.stale_trial_ids(study_id(study)):
            reason = storage.stale_reason(trial_id)
            # Re-checked under the trial's lock: its worker may have beaten (or finished) since.
            if storage.fail_trial(trial_id, reason, cause="crash", only_if_stale=True):
                number = storage.get_trial_number_from_id(trial_id)
                _log.warning("trial %d: %s", number, reason)
        self.requeue_missing(study)

    def requeue_missing(self, study: optuna.Study) -> bool:
        """Queue a retry for each trial failed by its worker that has none; True if any."""
        trials = study.get_trials(deepcopy=False)
        retried = {h[-1] for t in trials if (h := t.system_attrs.get(RETRY_HISTORY))}
        queued = False
        for trial in trials:
            cause = trial.system_attrs.get(RETRY_ATTR)
            if (
                trial.state == TrialState.FAIL
                and cause is not None
                and trial.number not in retried
                and trial.number not in self._refused
            ):
                if self.retry(study, trial, crashed=cause == "crash"):
                    queued = True
                else:
                    self._refused.add(trial.number)
        return queued

    def retry(self, study: optuna.Study, trial: FrozenTrial, *, crashed: bool) -> bool:
        """Queue `trial` again with the same parameters; False when the policy says no."""
        history = list(trial.system_attrs.get(RETRY_HISTORY, []))
        crashed_workers = list(trial.user_attrs.get(CRASHED_WORKERS_ATTR, []))
        crash_steps = list(trial.user_attrs.get(CRASH_STEPS_ATTR, []))
        worker = trial.user_attrs.get(WORKER_ATTR)
        # A worker that crashed may have been preempted or lost with its machine, which is
        # common on a spot fleet and no fault of the trial; a trial that kills its worker
        # (out of host memory, a segfault) dies again at the point where it died before.
        step = trial.last_step
        if crashed and step is not None and step in crash_steps:
            _log.warning(
                "trial %d crashed its worker at step %d again (workers %s): a failure of the "
                "trial, not of the machines; not retried",
                trial.number, step, ", ".join(map(str, [*crashed_workers, worker])),
            )  # fmt: skip
            return False
        if len(history) >= self.max_retries:
            _log.warning(
                "trial %d: %d retries used, not retried again", trial.number, len(history)
            )
            return False
        attrs = dict(trial.user_attrs)
        attrs.pop(FAIL_REASON_ATTR, None)
        if crashed:
            attrs[CRASHED_WORKERS_ATTR] = [*crashed_workers, worker]
            attrs[CRASH_STEPS_ATTR] = [*crash_steps, step]
        system_attrs = {k: v for k, v in trial.system_attrs.items() if k != RETRY_ATTR}
        # The retry carries the steps recorded so far: written with the new trial's row, not
        # reported, so the study shows one curve, the pruner judges one curve, and the epoch
        # budget (claimed per reported step) counts each of them once. A resumed trial goes
        # on after them; one that starts over reports them again, which records nothing.
        retry_trial = optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            intermediate_values=dict(trial.intermediate_values),
            user_attrs=attrs,
            system_attrs={
                **system_attrs,
                FAILED_TRIAL_ATTR: trial.system_attrs.get(FAILED_TRIAL_ATTR, trial.number),
                RETRY_HISTORY: [*history, trial.number],
            },
        )
        backend = storage_backend(study_storage(study))
        if isinstance(backend, ResilientRDBStorage):
            if not backend.requeue(study_id(study), trial.number, retry_trial):
                return True  # another worker (or a lost reply of ours) queued it already
        else:
            study.add_trial(retry_trial)
        _log.info("trial %d queued again (retry %d)", trial.number, len(history) + 1)
        return True


def retry_interrupted_elsewhere(
    study: optuna.Study, trial_id: int, policy: RetryPolicy, reason: str
) -> None:
    """`retry_interrupted` for storages that are not SQL (the gRPC proxy): fail, then queue."""
    storage = study_storage(study)
    trial = storage.get_trial(trial_id)
    if trial.state == TrialState.RUNNING:  # the signal came outside the objective
        storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reason)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    elif trial.state != TrialState.FAIL or trial.user_attrs.get(FAIL_REASON_ATTR) != reason:
        return  # it finished, or failed on its own, before the signal: nothing to retry
    policy.retry(study, storage.get_trial(trial_id), crashed=False)


def retry_interrupted(
    study: optuna.Study, storage: ResilientRDBStorage, policy: RetryPolicy, reason: str
) -> None:
    """Fail and queue again the trial this worker was running when it was told to stop.

    `storage.taken` is the trial this process last started, set in the transaction that started
    it, so a signal between starting a trial and running its objective still finds it.
    """
    if storage.taken is None:
        return
    try:
        trial = storage.get_trial(storage.taken)
        if trial.state == TrialState.RUNNING:  # the signal came outside the objective
            storage.fail_trial(storage.taken, reason, cause="stop")
        elif trial.system_attrs.get(RETRY_ATTR) is None:
            return  # it finished, or failed on its own, before the signal: nothing to retry
        policy.requeue_missing(study)
    except (*STORAGE_ERRORS, KeyError) as e:
        _log.warning(
            "could not fail trial %d for a retry (%s): another worker retries it after the "
            "grace period",
            storage.taken,
            e,
        )
