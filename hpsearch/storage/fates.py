"""How a trial ends when its worker cannot end it: failed for a retry, retried once, revived.

The base of `ResilientRDBStorage` (see its docstring for why each step is one transaction):
a trial failed because of its worker is failed together with its reason and retry mark
(`fail_trial`, `mark_for_retry`); its retry is queued at most once, whoever tries and however
often (`requeue`); a queued trial that can no longer start because the budget is spent is
failed with why (`fail_waiting`), not left WAITING for ever; and a trial that another worker
judged stale while its own worker was alive after all (starved of CPU, cut from the database
for a while) is revived when its worker next writes to it (`revive`), so its result is never
lost: its queued retry, which has not started, is failed instead.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hpsearch.budget import RETRY_HISTORY
from hpsearch.storage.attrs import FAIL_REASON_ATTR, RETRY_ATTR, WORKER_ATTR
from hpsearch.storage.optuna_compat import (
    create_scoped_session,
    models,
    prepared_new_trial,
    set_attr_in_session,
)
from hpsearch.storage.retry import call_with_retries

_log = logging.getLogger(__name__)
T = TypeVar("T")

# `keep_alive` looks at the trial once its last beat is this close to the grace period.
_MARGIN_SECONDS = 1.0


class TrialFates(RDBStorage):
    """Optuna's `RDBStorage` with hpsearch's transactions for trials their workers lost."""

    taken: int | None  # the trial this process last started (`ResilientRDBStorage._stamp`)
    taken_number: int | None  # its number, for log lines
    _outage: float  # when this process last reconnected
    _beat_ok: float  # when the last heartbeat of `taken` known to be written was sent
    max_wait: float | None
    on_revive: list[Callable[[int], None]]  # told the id of each trial `keep_alive` revives

    # --- retries ------------------------------------------------------------------------

    def _retry(self, call: Callable[[], T], what: str) -> T:
        return call_with_retries(
            call, what=what, on_retry=self.reconnect, max_wait=getattr(self, "max_wait", None)
        )

    def retried(self, call: Callable[[], T], what: str) -> T:
        """`call` (statements of hpsearch's own, on this storage's engine) with its retries."""
        return self._retry(call, what)

    def reconnect(self) -> None:
        """Drop every pooled connection (after a restart they all died together)."""
        self._outage = time.monotonic()
        self.engine.dispose()

    def _grace(self) -> int:
        assert self.heartbeat_interval is not None
        return self.grace_period or 2 * self.heartbeat_interval

    # --- failing and retrying -------------------------------------------------------------

    def fail_trial(
        self, trial_id: int, reason: str, *, cause: str, only_if_stale: bool = False
    ) -> bool:
        """Fail a RUNNING trial with its reason and retry mark, in one transaction.

        `only_if_stale`: only while its heartbeat is still older than the grace period (its
        worker may have beaten since the stale trials were listed). False when the trial was
        not failed by this call (finished, or not stale after all).
        """

        def fail() -> bool:
            with create_scoped_session(self.scoped_session) as session:
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
                if trial.state != TrialState.RUNNING:
                    return False
                if only_if_stale and not self._still_stale(session, trial_id):
                    return False
                user, system = models.TrialUserAttributeModel, models.TrialSystemAttributeModel
                set_attr_in_session(self, session, user, trial_id, FAIL_REASON_ATTR, reason)
                set_attr_in_session(self, session, system, trial_id, RETRY_ATTR, cause)
                trial.state = TrialState.FAIL
                trial.datetime_complete = datetime.datetime.now()
            return True

        return self._retry(fail, "fail trial")

    def stale_reason(self, trial_id: int) -> str:
        """The `fail_reason` of a trial whose worker stopped sending heartbeats."""
        worker = self.get_trial_user_attrs(trial_id).get(WORKER_ATTR, "?")
        return f"worker {worker} stopped sending heartbeats (killed, preempted or lost)"

    def _still_stale(self, session: Any, trial_id: int) -> bool:
        beat = models.TrialHeartbeatModel.where_trial_id(trial_id, session)
        if beat is None:
            return False
        now = session.execute(sa.func.now()).scalar().replace(tzinfo=None)
        return bool(now - beat.heartbeat > datetime.timedelta(seconds=self._grace()))

    def mark_for_retry(self, trial_id: int, reason: str, *, cause: str) -> None:
        """Record why a still-RUNNING trial is about to fail because of its worker."""

        def mark() -> None:
            with create_scoped_session(self.scoped_session, True) as session:
                user, system = models.TrialUserAttributeModel, models.TrialSystemAttributeModel
                set_attr_in_session(self, session, user, trial_id, FAIL_REASON_ATTR, reason)
                set_attr_in_session(self, session, system, trial_id, RETRY_ATTR, cause)

        self._retry(mark, "mark trial")

    def requeue(self, study_id: int, failed_number: int, retry: FrozenTrial) -> bool:
        """Queue `retry` unless the study already holds a retry of trial `failed_number`.

        Under the study's lock, so two workers (or one repeating a call whose reply was lost)
        never queue two retries of one trial.
        """

        def add() -> bool:
            with create_scoped_session(self.scoped_session) as session:
                models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
                histories = (
                    session.query(models.TrialSystemAttributeModel.value_json)
                    .join(models.TrialModel)
                    .filter(models.TrialModel.study_id == study_id)
                    .filter(models.TrialSystemAttributeModel.key == RETRY_HISTORY)
                    .all()
                )
                if any(json.loads(h)[-1:] == [failed_number] for (h,) in histories):
                    return False
                prepared_new_trial(self, study_id, retry, session)
            return True

        return self._retry(add, "queue retry")

    def fail_waiting(self, trial_id: int, reason: str) -> bool:
        """Fail a WAITING trial that can no longer start, with `reason`; False if it started."""

        def fail() -> bool:
            with create_scoped_session(self.scoped_session) as session:
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
                if trial.state != TrialState.WAITING:
                    return False
                user = models.TrialUserAttributeModel
                set_attr_in_session(self, session, user, trial_id, FAIL_REASON_ATTR, reason)
                trial.state = TrialState.FAIL
                trial.datetime_complete = datetime.datetime.now()
            return True

        return self._retry(fail, "fail waiting trial")

    def keep_alive(self, trial_id: int) -> bool:
        """Revive this process's trial if another worker may have judged it stale; True if it
        did. Only when its last beat known written is older than the grace period, the one
        case where a stale check could have failed it: a trial that beats costs no query."""
        if trial_id != self.taken or self.heartbeat_interval is None:
            return False
        if time.monotonic() - self._beat_ok < self._grace() - _MARGIN_SECONDS:
            return False
        if not self.revive(trial_id):
            return False
        for listener in self.on_revive:
            listener(trial_id)
        return True

    def revive(self, trial_id: int) -> bool:
        """This process's trial, failed as stale by another worker while it was alive after
        all: RUNNING again, its retry mark removed and its queued retry failed; in one
        transaction. False when it is not such a trial (finished, or failed another way)."""
        if trial_id != self.taken:
            return False

        def revive() -> bool:
            with create_scoped_session(self.scoped_session) as session:
                trial: Any = models.TrialModel.find_or_raise_by_id(trial_id, session, True)
                system, user = models.TrialSystemAttributeModel, models.TrialUserAttributeModel
                mark: Any = (
                    session.query(system).filter_by(trial_id=trial_id, key=RETRY_ATTR).first()
                )
                if (
                    trial.state != TrialState.FAIL
                    or mark is None
                    or json.loads(mark.value_json) != "crash"
                ):
                    return False
                session.delete(mark)
                session.query(user).filter_by(trial_id=trial_id, key=FAIL_REASON_ATTR).delete()
                trial.state, trial.datetime_complete = TrialState.RUNNING, None
                beat = models.TrialHeartbeatModel.where_trial_id(trial_id, session, True)
                if beat is not None:  # beating again, or the next stale check fails it again
                    beat.heartbeat = session.execute(sa.func.now()).scalar()
                self._cancel_retry(session, trial)
            self._beat_ok = time.monotonic()
            return True

        revived = self._retry(revive, "revive trial")
        if revived:
            _log.warning(
                "trial %s was failed as stale but its worker is alive: it goes on",
                self.taken_number,
            )
        return revived

    def _cancel_retry(self, session: Any, trial: Any) -> None:
        """Inside `revive`: fail the queued retry of `trial` (one already running goes on)."""
        rows = (
            session.query(models.TrialModel)
            .join(models.TrialSystemAttributeModel)
            .filter(models.TrialModel.study_id == trial.study_id)
            .filter(models.TrialModel.state == TrialState.WAITING)
            .filter(models.TrialSystemAttributeModel.key == RETRY_HISTORY)
            .with_for_update()
            .all()
        )
        for retry in rows:
            history = [a for a in retry.system_attributes if a.key == RETRY_HISTORY]
            if history and json.loads(history[0].value_json)[-1:] == [trial.number]:
                reason = f"trial {trial.number} was alive after all and finishes itself"
                user = models.TrialUserAttributeModel
                set_attr_in_session(self, session, user, retry.trial_id, FAIL_REASON_ATTR, reason)
                retry.state, retry.datetime_complete = TrialState.FAIL, datetime.datetime.now()
