"""The ledger: one row per study that every worker claims its trials and epochs from.

Optuna counts `n_trials` per process, and `MaxTrialsCallback` only looks after a trial ends, so
N workers overshoot by up to N - 1 trials. Here a slot is claimed with one conditional UPDATE
that the database serialises:

    UPDATE hpsearch_ledger SET claimed = claimed + 1
    WHERE study_id = ? AND claimed < trial_limit AND <time, GPU-hour, epoch limits not reached>

One row changed means the slot is ours; none means the budget is spent. A worker claims in the
same transaction that creates (or starts a queued) trial (`ResilientRDBStorage.use_budget`):
a slot never exists without its trial, so a worker killed, or a reply lost, between the two
cannot lose a slot. A fresh or enqueued trial takes a slot; the retry of a crashed trial does not
(it takes the place of the trial it retries), so `claimed` is the number of distinct trials
started. Epochs are claimed the same way, one reported step at a time, in the transaction that
records the step (`claim_epochs_in`): the study never trains more epochs than its budget. A
reached target closes the row (`close`): from that commit on no trial starts anywhere, whatever
each worker last looked at. What counts, and why, is `budget.rules`.

The row belongs to one study: `study_uid` is the uid hpsearch stores on the study when it
creates it, so a row left by a deleted study (whose id SQLite hands to the next one) is reset,
not inherited. The table lives beside Optuna's in the same database; Optuna and
optuna-dashboard ignore it. (`retry_slots` is kept for ledgers written by earlier versions,
which claimed a slot for each retry and added one back.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from hpsearch.budget.rules import BudgetSpent, LedgerState, Limits

T = TypeVar("T")
_log = logging.getLogger(__name__)


class Retrying(Protocol):
    """How the ledger's own statements ride out a lost connection: the storage's retries."""

    def __call__(self, call: Callable[[], T], what: str) -> T: ...


def _once(call: Callable[[], T], what: str) -> T:
    return call()


_metadata = sa.MetaData()
# Double, not Float: MySQL's FLOAT is single precision, which turns a Unix time into minutes of
# error (a 15-second study showed `time 56m`).
ledger_table = sa.Table(
    "hpsearch_ledger",
    _metadata,
    sa.Column("study_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("trial_limit", sa.Integer, nullable=True),
    sa.Column("claimed", sa.Integer, nullable=False, default=0),
    sa.Column("retry_slots", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", sa.Double, nullable=True),
    sa.Column("timeout_s", sa.Double, nullable=True),
    sa.Column("gpu_seconds", sa.Double, nullable=False, default=0.0),
    sa.Column("gpu_seconds_limit", sa.Double, nullable=True),
    sa.Column("epochs_used", sa.Integer, nullable=False, default=0),
    sa.Column("epoch_limit", sa.Integer, nullable=True),
    sa.Column("study_uid", sa.String(64), nullable=True),
    sa.Column("closed", sa.String(500), nullable=True),
)
# Columns added after the first release, with the DDL that adds them to an older table.
_ADDED = {
    "epochs_used": "INTEGER NOT NULL DEFAULT 0",
    "epoch_limit": "INTEGER",
    "study_uid": "VARCHAR(64)",
    "closed": "VARCHAR(500)",
}
_DOUBLES = ("started_at", "timeout_s", "gpu_seconds", "gpu_seconds_limit")


class Ledger:
    """The budget row of one study in a SQL database."""

    def __init__(
        self,
        engine: sa.Engine,
        study_id: int,
        *,
        uid: str | None = None,
        retrying: Retrying = _once,
    ) -> None:
        self._engine = engine
        self._study_id = study_id
        self._uid = uid
        self._retrying = retrying
        try:
            self._retry(self._create_table, "create table")
        except (sa.exc.ProgrammingError, sa.exc.IntegrityError, sa.exc.OperationalError):
            # Workers starting together race to create the table; one wins, the rest retry.
            time.sleep(0.5)
            self._retry(self._create_table, "create table")

    def __getstate__(self) -> dict[str, Any]:
        # An engine does not pickle; the storage that holds this ledger binds a new one.
        return {k: v for k, v in self.__dict__.items() if k not in ("_engine", "_retrying")}

    def bind(self, engine: sa.Engine, retrying: Retrying = _once) -> None:
        """Use `engine` from now on (after unpickling, the storage's new engine)."""
        self._engine = engine
        self._retrying = retrying

    def _create_table(self) -> None:
        _metadata.create_all(self._engine, checkfirst=True)
        columns = {c["name"]: c for c in sa.inspect(self._engine).get_columns(ledger_table.name)}
        with self._engine.begin() as c:
            for name, ddl in _ADDED.items():
                if name not in columns:
                    c.exec_driver_sql(f"ALTER TABLE {ledger_table.name} ADD COLUMN {name} {ddl}")
            if self._engine.dialect.name == "mysql":
                for name in _DOUBLES:
                    if not isinstance(columns[name]["type"], sa.Double):  # FLOAT: single
                        null = "NOT NULL DEFAULT 0" if name == "gpu_seconds" else "NULL"
                        c.exec_driver_sql(
                            f"ALTER TABLE {ledger_table.name} MODIFY {name} DOUBLE {null}"
                        )

    def _retry(self, call: Callable[[], T], what: str) -> T:
        return self._retrying(call, f"budget ledger {what}")

    def _values(self, limits: Limits) -> dict[str, Any]:
        return {
            "trial_limit": limits.n_trials,
            "timeout_s": limits.timeout_s,
            "gpu_seconds_limit": None if limits.gpu_hours is None else limits.gpu_hours * 3600,
            "epoch_limit": limits.epochs,
        }

    def set_limits(self, limits: Limits) -> None:
        """Create the row, or set its limits (the study's creator, or an explicit change)."""
        self._write(limits, update=True)

    def ensure(self, limits: Limits) -> None:
        """Create the row with `limits` if it is missing; leave an existing one as it is.

        A joining worker calls this: the study's budget is the one stored with it, changed only
        explicitly (`set_limits`).
        """
        self._write(limits, update=False)

    def _write(self, limits: Limits, *, update: bool) -> None:
        self.__dict__.pop("_has_epoch_limit", None)  # the limits may change now
        t = ledger_table
        values = self._values(limits)
        row = {"study_id": self._study_id, "claimed": 0, "retry_slots": 0, "gpu_seconds": 0.0,
               "epochs_used": 0, "study_uid": self._uid, "closed": None}  # fmt: skip
        mine = t.c.study_id == self._study_id

        def upsert() -> None:
            with self._engine.begin() as c:
                if self._uid is not None:
                    # A row of another study that had this id (deleted since): start afresh.
                    stale = c.execute(
                        sa.delete(t).where(
                            mine, sa.or_(t.c.study_uid.is_(None), t.c.study_uid != self._uid)
                        )
                    )
                    if stale.rowcount:
                        _log.warning(
                            "budget ledger of study id %d belonged to a deleted study: reset",
                            self._study_id,
                        )
                if update:
                    if c.execute(sa.update(t).where(mine).values(values)).rowcount:
                        return
                elif c.execute(sa.select(t.c.study_id).where(mine)).first() is not None:
                    return
                c.execute(sa.insert(t).values(**row, **values))

        try:
            self._retry(upsert, "set limits")
        except sa.exc.IntegrityError:
            # Another worker inserted the row first, with the study's same limits.
            self._retry(upsert, "set limits")

    def claim(self, *, now: float | None = None) -> bool:
        """Take one slot; False when the budget is spent."""
        return self._update(self._claim_statement(now, count=True), "claim") == 1

    def claim_in(self, session: Any, *, count: bool, now: float | None = None) -> bool:
        """Claim inside `session`'s transaction (the one starting the trial); False if spent.

        `count=False` (a retry, `rules.counts_as_new_trial`) claims no slot of `n_trials` but
        still needs time, GPU hours and epochs left, and the study open.
        """
        statement = self._claim_statement(now, count=count)
        statement = statement.where(ledger_table.c.study_id == self._study_id)
        return int(session.execute(statement).rowcount) == 1

    def claim_epochs_in(self, session: Any, epochs: int) -> bool:
        """Claim `epochs` trained epochs inside `session`'s transaction; False when spent.

        Always True for a study without an epoch budget (nothing is written then).
        """
        if epochs <= 0 or not self.counts_epochs(session):
            return True
        t = ledger_table
        statement = (
            sa.update(t)
            .where(t.c.study_id == self._study_id)
            .where(sa.or_(t.c.epoch_limit.is_(None), t.c.epochs_used + epochs <= t.c.epoch_limit))
            .values(epochs_used=t.c.epochs_used + epochs)
        )
        return int(session.execute(statement).rowcount) == 1

    def counts_epochs(self, session: Any) -> bool:
        """Whether the study has an epoch budget (read once: limits change rarely)."""
        if not hasattr(self, "_has_epoch_limit"):
            t = ledger_table
            limit = session.execute(
                sa.select(t.c.epoch_limit).where(t.c.study_id == self._study_id)
            ).scalar()
            self._has_epoch_limit = limit is not None
        return self._has_epoch_limit

    def spent(self) -> BudgetSpent:
        """The exception `ask()` raises when no slot is left."""
        return BudgetSpent(self._study_id)

    def _claim_statement(self, now: float | None, *, count: bool) -> sa.Update:
        now = time.time() if now is None else now
        t = ledger_table
        statement = sa.update(t).where(
            t.c.closed.is_(None),
            sa.or_(
                t.c.timeout_s.is_(None),
                t.c.started_at.is_(None),
                t.c.started_at + t.c.timeout_s > now,
            ),
            sa.or_(t.c.gpu_seconds_limit.is_(None), t.c.gpu_seconds < t.c.gpu_seconds_limit),
            sa.or_(t.c.epoch_limit.is_(None), t.c.epochs_used < t.c.epoch_limit),
        )
        started = sa.func.coalesce(t.c.started_at, now)
        if not count:
            return statement.values(started_at=started)
        return statement.where(
            sa.or_(t.c.trial_limit.is_(None), t.c.claimed < t.c.trial_limit + t.c.retry_slots)
        ).values(claimed=t.c.claimed + 1, started_at=started)

    def spend_gpu_seconds(self, seconds: float) -> None:
        t = ledger_table
        self._update(sa.update(t).values(gpu_seconds=t.c.gpu_seconds + seconds), "spend")

    def close(self, reason: str) -> None:
        """No trial starts any more, on any worker (the target was reached); `reopen` undoes."""
        self._update(sa.update(ledger_table).values(closed=reason[:500]), "close")

    def reopen(self) -> None:
        """Trials may start again (`hpsearch run --resume`)."""
        self._update(sa.update(ledger_table).values(closed=None), "reopen")

    def _update(self, statement: sa.Update, what: str) -> int:
        statement = statement.where(ledger_table.c.study_id == self._study_id)

        def run() -> int:
            with self._engine.begin() as c:
                return int(c.execute(statement).rowcount)

        return self._retry(run, what)

    def state(self) -> LedgerState | None:
        t = ledger_table

        def read() -> sa.Row[Any] | None:
            with self._engine.connect() as c:
                return c.execute(sa.select(t).where(t.c.study_id == self._study_id)).first()

        row = self._retry(read, "read")
        if row is None or (self._uid is not None and row.study_uid not in (None, self._uid)):
            return None
        return LedgerState(
            claimed=row.claimed,
            retry_slots=row.retry_slots,
            trial_limit=row.trial_limit,
            started_at=row.started_at,
            timeout_s=row.timeout_s,
            gpu_seconds=row.gpu_seconds,
            gpu_seconds_limit=row.gpu_seconds_limit,
            epochs_used=row.epochs_used,
            epoch_limit=row.epoch_limit,
            closed=row.closed,
        )
