"""An RDBStorage that rides out database restarts and dropped connections without losing a trial.

Optuna's RDBStorage turns any SQL error into `StorageInternalError`, and its heartbeat thread
dies on the first failed beat. A worker that runs for days will meet a database restart, a
failover or an idle connection cut by a firewall; it should wait and go on, not crash and leave
its trial RUNNING. Here every storage call retries, with backoff, errors that mean "the
connection is gone" (never constraint or data errors), and a failed heartbeat is logged and
tried again at the next beat.

A retried call may repeat one whose commit succeeded but whose reply was lost, and a process may
be killed between any two calls. So the steps of a trial's life that must not be lost or done
twice are each one transaction here:

- a fresh trial is created together with its budget slot and its first heartbeat
  (`_create_new_trial`), and a queued trial starts the same way (`set_trial_state_values`), so a
  slot is never claimed without its trial, and no trial is RUNNING without a heartbeat (one that
  never beats is failed after the grace period like any other crashed trial);
- finishing a trial whose finish was already committed by a lost attempt is a success;
- a trial is failed together with its reason and its retry mark (`fail_trial`), and a retry is
  queued at most once per failed trial (`requeue`), whoever tries and however often.

After the database restarts, no heartbeat could be recorded while it was down: trials are judged
stale only once the server and this process have been connected for a few heartbeats, so a live
trial is never failed for the database's outage (`stale_trial_ids`).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hpsearch.budget import BudgetSpent, Ledger, counts_as_new_trial
from hpsearch.storage.fates import TrialFates
from hpsearch.storage.mysql import mysql_microseconds
from hpsearch.storage.optuna_compat import (
    CACHE_LAYER_CALLS,
    create_new_trial,
    create_scoped_session,
    models,
    prepared_new_trial,
    set_intermediate_value_in_session,
    stale_trial_ids,
    upsert_user_attrs,
)
from hpsearch.storage.retry import first_line
from hpsearch.storage.sqlite import reading, serialize_writes

_log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_STALE_EVERY = 5.0  # seconds between two stale checks of Optuna's, at the most
# A beat written with the trial's start is not repeated while younger than this (seconds, and
# share of the heartbeat interval).
_FRESH_BEAT, _FRESH_SHARE = 0.5, 0.05


def _retrying(method: F) -> F:
    # Optuna's getters only read: on SQLite they need not wait for another worker's write.
    reads = method.__name__.lstrip("_").startswith("get_")

    @functools.wraps(method)
    def call(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        with reading() if reads else contextlib.nullcontext():
            return self._retry(lambda: method(self, *args, **kwargs), method.__name__)

    return call  # type: ignore[return-value]


class ResilientRDBStorage(TrialFates):
    """`RDBStorage` whose calls survive a database restart (see the module docstring)."""

    def __init__(self, *args: Any, serialize_sqlite: bool = True, **kwargs: Any) -> None:
        # Set before Optuna's constructor, which already makes (retried) calls.
        self._budgets: dict[int, Ledger] = {}
        self._outage = -float("inf")  # when this process last reconnected (stale_trial_ids)
        self._stale: set[int] = set()  # found stale for Optuna's `fail_stale_trials`
        self._stale_asked = -float("inf")
        self.taken: int | None = None  # the trial this process last started, for a signal
        self.taken_number: int | None = None  # its number
        # When this process wrote the first heartbeat of `taken`, with the trial's start.
        self._first_beat = -float("inf")
        self._beat_ok = -float("inf")
        self.on_revive: list[Callable[[int], None]] = []
        self._trial_attrs: dict[str, Any] = {}  # written on every trial this process starts
        self._serialize_sqlite = serialize_sqlite
        super().__init__(*args, **kwargs)
        if serialize_sqlite and self.engine.dialect.name == "sqlite":
            serialize_writes(self.engine)  # the locks below, which SQLite does not take itself
        if self.engine.dialect.name == "mysql" and not kwargs.get("skip_table_creation"):
            mysql_microseconds(self.engine)
        # A call waiting longer than a heartbeat could find, when the database is back, that
        # its trial was judged stale meanwhile (a finished trial failed, its result lost).
        interval = self.heartbeat_interval
        self.max_wait: float | None = None if interval is None else min(60.0, float(interval))

    def __setstate__(self, state: dict[Any, Any]) -> None:
        # Optuna makes a new engine for the copy; the budget and SQLite's locks follow it.
        super().__setstate__(state)
        if self._serialize_sqlite and self.engine.dialect.name == "sqlite":
            serialize_writes(self.engine)
        for budget in self._budgets.values():
            budget.bind(self.engine, self.retried)

    # --- the budget, claimed with the trial -------------------------------------------------

    def use_budget(self, study_id: int, ledger: Ledger) -> None:
        """Claim from `ledger` in the same transaction as each trial this process starts, and
        each epoch it records (what counts: `budget.rules`). When no slot is left, `ask()`
        raises `BudgetSpent`."""
        self._budgets[study_id] = ledger

    def stamp_trials(self, attrs: Mapping[str, Any]) -> None:
        """User attributes every trial this process starts carries (the worker's provenance),
        written in the transaction that starts it: one commit fewer per trial than a write of
        their own."""
        self._trial_attrs = dict(attrs)

    def _stamp(self, session: Any, trial_id: int) -> None:
        """Inside the transaction that starts trial `trial_id`: its attributes, and what
        `record_heartbeat` and a signal need to know of it."""
        if self._trial_attrs:
            upsert_user_attrs(session, self.engine.dialect.name, trial_id, self._trial_attrs)
        self.taken = trial_id
        # Its number, for log lines (people know trials by number, not by database id); the
        # row is in this session already, so no query.
        self.taken_number = int(models.TrialModel.find_or_raise_by_id(trial_id, session).number)
        self._first_beat = self._beat_ok = time.monotonic()

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        if template_trial is not None:  # enqueued or retried: WAITING, for whoever comes first
            return self._retry(
                lambda: create_new_trial(self, study_id, template_trial),
                "create trial",
            )
        budget = self._budgets.get(study_id)

        def create() -> FrozenTrial:
            with create_scoped_session(self.scoped_session) as session:
                # The lock Optuna takes to number trials; it also orders the budget's claims.
                models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
                if budget is not None and not budget.claim_in(session, count=True):
                    raise budget.spent()  # nothing was written: the transaction rolls back
                trial: Any = prepared_new_trial(self, study_id, None, session)
                if self.heartbeat_interval is not None:
                    session.add(models.TrialHeartbeatModel(trial_id=trial.trial_id))
                self._stamp(session, trial.trial_id)
                return FrozenTrial(
                    number=trial.number, state=trial.state, value=None, values=None,
                    datetime_start=trial.datetime_start, datetime_complete=None, params={},
                    distributions={}, user_attrs=dict(self._trial_attrs), system_attrs={},
                    intermediate_values={}, trial_id=trial.trial_id,
                )  # fmt: skip

        # A reply lost after the commit makes a second trial; the first never beats and is
        # failed and retried like a crashed one, so the budget still counts each trial once.
        return self._retry(create, "create trial")

    def _first_heartbeat(self, session: Any, trial_id: int) -> None:
        if self.heartbeat_interval is None:
            return
        beat = models.TrialHeartbeatModel.where_trial_id(trial_id, session, True)
        if beat is None:
            session.add(models.TrialHeartbeatModel(trial_id=trial_id))
        else:
            beat.heartbeat = session.execute(sa.func.now()).scalar()

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state == TrialState.RUNNING:
            return self._retry(lambda: self._start_waiting(trial_id), "start trial")
        if state == TrialState.FAIL and values is None and trial_id in self._stale:
            self._stale.discard(trial_id)  # Optuna's `fail_stale_trials`, on a trial found above
            return self.fail_trial(trial_id, self.stale_reason(trial_id), cause="crash",
                                   only_if_stale=True)  # fmt: skip
        attempts = [0]

        def finish() -> bool:
            attempts[0] += 1
            try:
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except UpdateFinishedTrialError:
                if attempts[0] > 1 and self._finished_as(trial_id, state, values):
                    return True  # the lost attempt did commit
                raise

        return self._retry(finish, "set_trial_state_values")

    def _finished_as(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None
    ) -> bool:
        trial = RDBStorage.get_trial(self, trial_id)
        same = values is None or trial.values == [float(v) for v in values]
        return trial.state == state and same

    def _start_waiting(self, trial_id: int) -> bool:
        """WAITING -> RUNNING with its budget slot and first heartbeat, as one transaction."""
        with create_scoped_session(self.scoped_session) as session:
            trial: Any = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
            self.check_trial_is_updatable(trial_id, trial.state)
            if trial.state != TrialState.WAITING:
                return False
            budget = self._budgets.get(trial.study_id)
            if budget is not None:
                keys = session.query(models.TrialSystemAttributeModel.key).filter_by(
                    trial_id=trial_id
                )
                if not budget.claim_in(session, count=counts_as_new_trial(k for (k,) in keys)):
                    return False  # left WAITING: Optuna's ask() tries the next, then a new one
            trial.state = TrialState.RUNNING
            trial.datetime_start = datetime.datetime.now()
            self._first_heartbeat(session, trial_id)
            self._stamp(session, trial_id)
        return True

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        """Optuna's write, claiming one epoch of the study's epoch budget in the same transaction.

        A step reported again claims nothing. When no epoch is left, nothing is written and
        `BudgetSpent` is raised: the study never records more epochs than its budget. The same
        statements as Optuna's own write, plus the claim where the study counts epochs: every
        reported step of every trial pays this.
        """
        with create_scoped_session(self.scoped_session, True) as session:

            def claim(study_id: int) -> None:
                budget = self._budgets.get(study_id)
                if budget is not None and not budget.claim_epochs_in(session, 1):
                    raise BudgetSpent(study_id, "epoch budget")

            set_intermediate_value_in_session(
                self, session, trial_id, step, intermediate_value, before_new_step=claim
            )

    # --- heartbeats -----------------------------------------------------------------------

    def stale_trial_ids(self, study_id: int) -> list[int]:
        """The trials whose heartbeat stopped (what Optuna's own check would fail).

        None while the database or this process came back less than two heartbeats ago: the
        heartbeats missed during the outage were not the trials' fault, and every live worker
        beats again within one interval of the database's return.
        """
        assert self.heartbeat_interval is not None
        settle = 2 * self.heartbeat_interval + 1
        if time.monotonic() - self._outage < settle:
            return []
        if self._retry(self.server_uptime, "server uptime") < settle:
            return []
        return self._retry(lambda: stale_trial_ids(self, study_id), "stale")

    def server_uptime(self) -> float:
        """Seconds since the database server started (infinite where unknown, e.g. SQLite)."""
        dialect = self.engine.dialect.name
        with self.engine.connect() as c:
            if dialect == "postgresql":
                sql = "SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())"
                return float(c.execute(sa.text(sql)).scalar_one())
            if dialect == "mysql":
                row = c.execute(sa.text("SHOW GLOBAL STATUS LIKE 'Uptime'")).first()
                return float(row[1]) if row is not None else float("inf")
        return float("inf")

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's hook for `fail_stale_trials`, which every caller of `study.optimize` runs
        before each trial (hpsearch's worker, the Python API, a plain Optuna script).

        The trials it returns are failed by Optuna through `set_trial_state_values`, which
        fails them here with their reason and retry mark, as hpsearch's own check does. Asked
        at most once per `_STALE_EVERY` seconds: a trial is stale only after the grace period,
        so asking before each of many short trials finds nothing new and costs a query each.
        """
        now = time.monotonic()
        if now - self._stale_asked < min(_STALE_EVERY, float(self.heartbeat_interval or 0)):
            return []
        self._stale_asked = now
        ids = self.stale_trial_ids(study_id)
        self._stale.update(ids)
        return ids

    def record_heartbeat(self, trial_id: int) -> None:
        # Optuna's heartbeat thread beats as soon as the trial starts; the transaction that
        # started it has just written that beat (`_stamp`), so the thread's first is skipped:
        # one commit fewer per trial. The next beat comes one interval after the skipped one,
        # so the longest gap grows by at most the young beat's age, a small part of the grace
        # period (which the spec keeps longer than an interval).
        interval = float(self.heartbeat_interval or 0)
        young = min(_FRESH_BEAT, _FRESH_SHARE * interval)
        if trial_id == self.taken and time.monotonic() - self._first_beat < young:
            self._first_beat = -float("inf")  # only the thread's first beat
            return
        self.keep_alive(trial_id)  # a beat after a starved while: failed as stale meanwhile?
        sent = time.monotonic()
        try:
            super().record_heartbeat(trial_id)
            if trial_id == self.taken:
                self._beat_ok = sent
        except (StorageInternalError, sa_exc.SQLAlchemyError) as e:
            # A missed beat is harmless while shorter than the grace period; a dead heartbeat
            # thread would get this live trial failed and run twice.
            which = f"trial {self.taken_number}" if trial_id == self.taken else "a trial"
            _log.warning("heartbeat of %s not recorded: %s", which, first_line(e))
            self.reconnect()

    # --- attributes -----------------------------------------------------------------------

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Several user attributes in one transaction: one commit instead of one per key.

        Each trial records about six attributes of provenance; on a server database a commit is
        the dominant cost, so this keeps hpsearch's per-trial overhead small (benchmarks/).
        """

        def write() -> None:
            with create_scoped_session(self.scoped_session) as session:
                # As Optuna's own `set_trial_user_attr`: a finished trial's attributes are final.
                trial: Any = models.TrialModel.find_or_raise_by_id(trial_id, session, True)
                self.check_trial_is_updatable(trial_id, trial.state)
                upsert_user_attrs(session, self.engine.dialect.name, trial_id, attrs)

        self._retry(write, "set_trial_user_attrs")


_RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_trial_user_attrs",
    "get_trial_system_attrs", "get_all_studies", "set_trial_param",
    "get_trial_param", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial_id_from_study_id_trial_number",
    "get_trial", "get_all_trials", "get_best_trial",
)  # fmt: skip
for _name in (*_RETRIED, *CACHE_LAYER_CALLS):
    setattr(
        ResilientRDBStorage,
        _name,
        _retrying(getattr(ResilientRDBStorage, _name)),
    )


def _revivable(method: F) -> F:
    # A write to this process's trial that finds it finished: failed as stale while this
    # worker was starved? Revived, the write is made (`TrialFates.keep_alive`).
    @functools.wraps(method)
    def call(self: ResilientRDBStorage, trial_id: int, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, trial_id, *args, **kwargs)
        except UpdateFinishedTrialError:
            if not self.keep_alive(trial_id):
                raise
            return method(self, trial_id, *args, **kwargs)

    return call  # type: ignore[return-value]


for _name in ("set_trial_intermediate_value", "set_trial_user_attrs", "set_trial_user_attr",
              "set_trial_system_attr", "set_trial_param"):  # fmt: skip
    setattr(ResilientRDBStorage, _name, _revivable(getattr(ResilientRDBStorage, _name)))
